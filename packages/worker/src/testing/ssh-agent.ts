import { execFileSync, spawn } from 'node:child_process';
import { access, chmod, copyFile, mkdir } from 'node:fs/promises';
import path from 'node:path';

/** Whether ssh-agent, ssh-add and ssh-keygen (Debian's openssh-client) are installed. */
export function hasSshAgent(): boolean {
  try {
    execFileSync('ssh-agent', ['-h'], { stdio: 'ignore' });
  } catch (err) {
    // ssh-agent -h exits non-zero after printing its usage; only a missing binary is fatal.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
  }
  return ['ssh-add', 'ssh-keygen'].every((b) => {
    try {
      execFileSync('which', [b], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  });
}

/**
 * A real ssh-agent on a socket in `dir`, holding one fresh ed25519 key;
 * `fingerprint` is that key as `ssh-add -l` lists it. `stop()` kills it.
 */
export async function startSshAgent(dir: string): Promise<{ socket: string; fingerprint: string; stop(): void }> {
  await mkdir(dir, { recursive: true });
  const key = path.join(dir, 'key');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'kiln-test', '-f', key]);
  const socket = path.join(dir, 'agent.sock');
  const child = spawn('ssh-agent', ['-D', '-a', socket], { stdio: 'ignore' });
  const stop = () => child.kill('SIGKILL');
  try {
    for (let i = 0; i < 100 && !(await access(socket).then(() => true, () => false)); i++) await new Promise((r) => setTimeout(r, 20));
    execFileSync('ssh-add', ['-q', key], { env: { ...process.env, SSH_AUTH_SOCK: socket }, stdio: 'ignore' });
    const fingerprint = execFileSync('ssh-keygen', ['-l', '-f', `${key}.pub`]).toString().trim();
    return { socket, fingerprint, stop };
  } catch (err) {
    stop();
    throw err;
  }
}

/** The host's ssh-add with its loader and libraries (from ldd) in one directory: run it as `ld.so --library-path lib ssh-add`. */
export async function sshAddClient(dir: string): Promise<string> {
  if (await access(path.join(dir, 'ssh-add')).then(() => true, () => false)) return dir;
  const bin = execFileSync('which', ['ssh-add']).toString().trim();
  await mkdir(path.join(dir, 'lib'), { recursive: true });
  for (const line of execFileSync('ldd', [bin]).toString().split('\n')) {
    const lib = /=>\s*(\/\S+)/.exec(line)?.[1];
    const loader = /^\s*(\/\S*ld-linux\S*)/.exec(line)?.[1];
    if (lib) await copyFile(lib, path.join(dir, 'lib', path.basename(lib)));
    if (loader) await copyFile(loader, path.join(dir, 'ld.so'));
  }
  await copyFile(bin, path.join(dir, 'ssh-add'));
  for (const f of ['ld.so', 'ssh-add']) await chmod(path.join(dir, f), 0o755);
  return dir;
}
