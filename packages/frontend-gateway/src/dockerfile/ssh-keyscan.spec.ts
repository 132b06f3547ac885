import { describe, expect, it } from 'vitest';
import { scanSshHostKeys, sshHostOf } from './ssh-keyscan.js';

describe('SSH host keys of git remotes (trust on first use)', () => {
  it('finds host and port of SSH remotes only', () => {
    expect(sshHostOf('ssh://git@127.0.0.1:2222/srv/repo.git')).toEqual({ host: '127.0.0.1', port: 2222 });
    expect(sshHostOf('git+ssh://example.com/x.git')).toEqual({ host: 'example.com', port: 22 });
    expect(sshHostOf('ssh://git@[::1]:2200/x.git')).toEqual({ host: '::1', port: 2200 });
    expect(sshHostOf('git@127.0.0.1:repo.git')).toEqual({ host: '127.0.0.1', port: 22 });
    expect(sshHostOf('https://user@host/x.git')).toBeUndefined();
    expect(sshHostOf('git://host/x.git')).toBeUndefined();
  });

  it('a host that answers nothing gives no keys (the fetch then checks none, as BuildKit)', async () => {
    // Port 1 on loopback: refused at once.
    expect(await scanSshHostKeys('ssh://git@127.0.0.1:1/x.git')).toBeUndefined();
    expect(await scanSshHostKeys('https://127.0.0.1/x.git')).toBeUndefined();
  });
});
