import { randomBytes } from 'node:crypto';
import { rmdirSync, unlinkSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { InvalidArgumentError } from '@kiln/common';

/** Longest unix socket path we listen on (sun_path holds 108 bytes with the NUL). */
const MAX_SOCKET_PATH = 100;

/**
 * Host files one exec step sees through bind mounts but never commits: the
 * generated /etc/hosts and /etc/resolv.conf and the SSH agent sockets. They live in
 * `<stateDir>/run/<random>/`; `dispose()` removes the directory and
 * `reapRunFiles` the ones a killed daemon left behind.
 */
export class RunFiles {
  private sockets = 0;
  /** Files written into `dir` (sockets included): what `dispose` removes one by one. */
  private readonly files = new Set<string>();
  private shortDir: string | undefined;

  private constructor(readonly dir: string) {}

  static async create(stateDir: string): Promise<RunFiles> {
    const dir = path.join(stateDir, 'run', randomBytes(8).toString('hex'));
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return new RunFiles(dir);
  }

  /** Writes the step's /etc/hosts and returns its host path. */
  async writeHosts(content: string): Promise<string> {
    const file = path.join(this.dir, 'hosts');
    this.files.add(file);
    await writeFile(file, content, { mode: 0o644 });
    return file;
  }

  /** Writes the step's /etc/resolv.conf and returns its host path. */
  async writeResolvConf(content: string): Promise<string> {
    const file = path.join(this.dir, 'resolv.conf');
    this.files.add(file);
    await writeFile(file, content, { mode: 0o644 });
    return file;
  }

  /**
   * A fresh path for a unix socket. When the state dir is too deep for a
   * socket path, a private directory under the system temp dir is used.
   */
  async socketPath(): Promise<string> {
    const name = `ssh-${this.sockets++}.sock`;
    const inDir = path.join(this.dir, name);
    if (Buffer.byteLength(inDir) <= MAX_SOCKET_PATH) {
      this.files.add(inDir);
      return inDir;
    }
    this.shortDir ??= await mkdtemp(path.join(tmpdir(), 'kiln-ssh-'));
    return path.join(this.shortDir, name);
  }

  /**
   * Removes the directory: its known files and itself by plain system calls
   * (a few tens of microseconds at the end of every step), a recursive
   * removal when anything else is left in it.
   */
  async dispose(): Promise<void> {
    for (const f of this.files) {
      try {
        unlinkSync(f);
      } catch {
        // never written, or already gone
      }
    }
    try {
      rmdirSync(this.dir);
    } catch {
      await rm(this.dir, { recursive: true, force: true });
    }
    if (this.shortDir) await rm(this.shortDir, { recursive: true, force: true });
  }
}

/** Removes every run directory under `stateDir` (left by a daemon that was killed). */
export async function reapRunFiles(stateDir: string): Promise<void> {
  await rm(path.join(stateDir, 'run'), { recursive: true, force: true });
}

/** The extra-host IP Docker replaces with the host's gateway address. */
export const HOST_GATEWAY = 'host-gateway';

export interface HostsOptions {
  hostname: string;
  extraHosts: readonly { host: string; ip: string }[];
  /** Host network: start from the host's own /etc/hosts. */
  hostNetwork: boolean;
  /** The address an extra host `host-gateway` gets (StepNetwork.hostGateway). */
  hostGateway: string;
}

/**
 * The /etc/hosts of a step, as BuildKit writes it: localhost and the step's
 * hostname on the loopback addresses (the host's file with the host
 * network), then one line per extra host (`--add-host`; the IP
 * `host-gateway` is replaced by the step's gateway address, as Docker does).
 */
export async function hostsFile(opts: HostsOptions): Promise<string> {
  let text: string;
  if (opts.hostNetwork) {
    text = await readFile('/etc/hosts', 'utf8').catch(() => '127.0.0.1\tlocalhost\n');
    if (!text.endsWith('\n')) text += '\n';
  } else {
    text = `127.0.0.1\tlocalhost ${opts.hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n`;
  }
  for (const entry of opts.extraHosts) {
    const h = entry.ip === HOST_GATEWAY ? { host: entry.host, ip: opts.hostGateway } : entry;
    if (!/^[A-Za-z0-9_.:-]+$/.test(h.host)) throw new InvalidArgumentError(`invalid extra host name "${h.host}"`, 'extraHosts');
    if (!/^[0-9A-Fa-f.:]+$/.test(h.ip)) throw new InvalidArgumentError(`invalid IP address "${h.ip}" for extra host "${h.host}"`, 'extraHosts');
    text += `${h.ip}\t${h.host}\n`;
  }
  return text;
}
