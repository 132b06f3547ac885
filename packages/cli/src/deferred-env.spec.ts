import { describe, expect, it } from 'vitest';
import { DEFERRED_EXTRA_CA_CERTS, restoreDeferredEnv } from './deferred-env.js';

describe('restoreDeferredEnv', () => {
  it('puts the extra CA file the launcher set aside back under its own name', () => {
    const env: NodeJS.ProcessEnv = { [DEFERRED_EXTRA_CA_CERTS]: '/etc/ssl/extra.pem', PATH: '/bin' };
    restoreDeferredEnv(env);
    expect(env).toEqual({ NODE_EXTRA_CA_CERTS: '/etc/ssl/extra.pem', PATH: '/bin' });
  });

  it('leaves an environment without the marker alone, and never overrides a value set since', () => {
    const plain: NodeJS.ProcessEnv = { PATH: '/bin' };
    restoreDeferredEnv(plain);
    expect(plain).toEqual({ PATH: '/bin' });
    const both: NodeJS.ProcessEnv = { [DEFERRED_EXTRA_CA_CERTS]: '/a.pem', NODE_EXTRA_CA_CERTS: '/b.pem' };
    restoreDeferredEnv(both);
    expect(both).toEqual({ NODE_EXTRA_CA_CERTS: '/b.pem' });
  });
});
