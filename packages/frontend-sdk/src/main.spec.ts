import { compileFrontendArgs } from './main.js';

describe('compileFrontendArgs', () => {
  it('takes the NATS and listen flags kiln daemon --tier takes', () => {
    const o = compileFrontendArgs(['--nats', 'nats://127.0.0.1:4222', '--listen=tcp://127.0.0.1:0', '--id', 'yaml-1'], {});
    expect(o).toMatchObject({ listen: 'tcp://127.0.0.1:0', id: 'yaml-1', nats: { url: 'nats://127.0.0.1:4222' }, insecureTcp: false });
    expect(o.tls).toBeUndefined();
  });

  it('refuses unknown flags, a missing --nats, half of the TLS files and credentials in the URL, naming the flag', () => {
    expect(() => compileFrontendArgs(['--nats', 'nats://x:1', '--bogus', '1'], {})).toThrow(/unknown flag --bogus/);
    expect(() => compileFrontendArgs(['--listen', 'tcp://127.0.0.1:0'], {})).toThrow(/--nats is required/);
    expect(() => compileFrontendArgs(['--nats', 'nats://x:1', '--tlscert', 'a.pem'], {})).toThrow(/--tlscacert, --tlscert and --tlskey together/);
    expect(() => compileFrontendArgs(['--nats', 'nats://u:p@x:1'], {})).toThrow(/must not carry credentials/);
    expect(() => compileFrontendArgs(['--nats'], {})).toThrow(/--nats needs a value/);
  });
});
