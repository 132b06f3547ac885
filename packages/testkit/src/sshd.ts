import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from './ports.js';

export const SSHD = '/usr/sbin/sshd';

/** A real OpenSSH server on 127.0.0.1 for a test, with keys of its own. */
export interface TestSshd {
  port: number;
  /** The private key sshd accepts (for root), to load into an ssh-agent. */
  userKey: string;
  /** The server's public host key line (`ssh-ed25519 AAAA...`). */
  hostKey: string;
  stop(): void;
}

/**
 * Starts `sshd -D` on 127.0.0.1 at a free port, files under `dir`: its own
 * ed25519 host key, one authorized key (for root; keys only, no PAM, no
 * passwords) whose private half is `userKey`. Resolves once it answers
 * `ssh-keyscan`.
 */
export async function startSshd(dir: string): Promise<TestSshd> {
  mkdirSync(dir, { recursive: true });
  const keygen = (file: string) => execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', file]);
  keygen(join(dir, 'host_key'));
  keygen(join(dir, 'user_key'));
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'user_key.pub')));
  const port = await freePort();
  writeFileSync(
    join(dir, 'sshd_config'),
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${join(dir, 'host_key')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      '',
    ].join('\n'),
  );
  // sshd's privilege separation directory.
  mkdirSync('/run/sshd', { recursive: true });
  const proc = spawn(SSHD, ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    try {
      execFileSync('ssh-keyscan', ['-p', String(port), '127.0.0.1'], { stdio: 'ignore', timeout: 2000 });
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const hostKey = readFileSync(join(dir, 'host_key.pub'), 'utf8').trim().split(' ').slice(0, 2).join(' ');
  return { port, userKey: join(dir, 'user_key'), hostKey, stop: () => proc.kill() };
}
