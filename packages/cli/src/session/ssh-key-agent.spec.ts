import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { createPublicKey, generateKeyPairSync, verify } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sessionSshAgents } from '../build/solve-request.js';
import type { BuildOptions } from '../build/build-options.js';
import { createSshKeyAgent, type SshKeyAgent } from './ssh-key-agent.js';
import { parseSshPrivateKey, SshKeyParseError, SshReader, sshString, type SshPrivateKey } from './ssh-private-key.js';

/** Clients of our agent must run asynchronously: the agent answers on this process's event loop. */
const run = promisify(execFile);

function hasOpenSsh(): boolean {
  try {
    execFileSync('which', ['ssh-add', 'ssh-keygen'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const withSsh = hasOpenSsh() ? describe : describe.skip;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'kiln-ssh-agent-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Serves the agent on a unix socket, as the real ssh tools expect to reach one. */
async function serve(agent: SshKeyAgent, name: string): Promise<{ socket: string; server: Server }> {
  const socket = join(dir, `${name}.sock`);
  const server = createServer((sock) => {
    const conn = agent.connect();
    sock.pipe(conn).pipe(sock);
    sock.on('error', () => conn.destroy());
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  return { socket, server };
}

function keygen(name: string, args: string[]): string {
  const file = join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-N', '', '-C', `comment-${name}`, '-f', file, ...args]);
  return file;
}

/** One request/answer on a fresh connection. */
async function ask(agent: SshKeyAgent, body: Buffer): Promise<Buffer> {
  const conn = agent.connect();
  const chunks: Buffer[] = [];
  conn.on('data', (c: Buffer) => chunks.push(c));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  conn.end(Buffer.concat([len, body]));
  await new Promise((resolve) => conn.once('close', resolve));
  const out = Buffer.concat(chunks);
  expect(out.readUInt32BE(0)).toBe(out.length - 4);
  return out.subarray(4);
}

function signRequest(key: SshPrivateKey, data: Buffer, flags: number): Buffer {
  const f = Buffer.alloc(4);
  f.writeUInt32BE(flags);
  return Buffer.concat([Buffer.from([13]), sshString(key.publicBlob), sshString(data), f]);
}

withSsh('in-process SSH agent over key files (real ssh-add and ssh-keygen as clients)', () => {
  const cases: Array<[string, string[]]> = [
    ['ed25519', ['-t', 'ed25519']],
    ['rsa', ['-t', 'rsa', '-b', '2048']],
    ['ecdsa256', ['-t', 'ecdsa', '-b', '256']],
    ['ecdsa521', ['-t', 'ecdsa', '-b', '521']],
    ['rsa-pem', ['-t', 'rsa', '-b', '2048', '-m', 'PEM']],
    ['ecdsa-pem', ['-t', 'ecdsa', '-b', '384', '-m', 'PEM']],
  ];

  it.each(cases)('%s: ssh-add -l lists it and ssh-keygen -Y sign makes a signature that verifies', async (name, args) => {
    const file = keygen(name, args);
    const key = parseSshPrivateKey(execFileSync('cat', [file]).toString());
    const { socket, server } = await serve(createSshKeyAgent([key]), name);
    try {
      const env = { ...process.env, SSH_AUTH_SOCK: socket };
      const fingerprint = execFileSync('ssh-keygen', ['-l', '-f', `${file}.pub`]).toString().split(' ')[1];
      const listed = (await run('ssh-add', ['-l'], { env })).stdout;
      expect(listed).toContain(fingerprint);
      // The public key the agent lists is the one ssh-keygen wrote.
      expect((await run('ssh-add', ['-L'], { env })).stdout.split(' ').slice(0, 2)).toEqual(execFileSync('cat', [`${file}.pub`]).toString().split(' ').slice(0, 2));

      const data = join(dir, `${name}.data`);
      writeFileSync(data, `signed by ${name}\n`);
      // With only the public half given, ssh-keygen asks the agent to sign (RSA: with the rsa-sha2-512 flag).
      await run('ssh-keygen', ['-Y', 'sign', '-f', `${file}.pub`, '-n', 'file', data], { env });
      const check = execFileSync('ssh-keygen', ['-Y', 'check-novalidate', '-n', 'file', '-s', `${data}.sig`], { input: execFileSync('cat', [data]) }).toString();
      expect(check).toMatch(/Good "file" signature/);
    } finally {
      server.close();
    }
  });

  it('RSA signs with the hash the request flags ask for: rsa-sha2-512 (4), rsa-sha2-256 (2), else ssh-rsa (SHA-1)', async () => {
    const file = keygen('rsa-flags', ['-t', 'rsa', '-b', '2048']);
    const key = parseSshPrivateKey(execFileSync('cat', [file]).toString());
    const agent = createSshKeyAgent([key]);
    const pub = createPublicKey({ key: execFileSync('ssh-keygen', ['-e', '-m', 'PKCS8', '-f', `${file}.pub`]).toString(), format: 'pem' });
    const data = Buffer.from('challenge');
    for (const [flags, alg, hash] of [[4, 'rsa-sha2-512', 'sha512'], [2, 'rsa-sha2-256', 'sha256'], [6, 'rsa-sha2-512', 'sha512'], [0, 'ssh-rsa', 'sha1']] as const) {
      const answer = await ask(agent, signRequest(key, data, flags));
      expect(answer[0]).toBe(14);
      const sig = new SshReader(new SshReader(answer.subarray(1)).string());
      expect(sig.text()).toBe(alg);
      expect(verify(hash, data, pub, sig.string())).toBe(true);
    }
  });

  it('answers FAILURE to unknown keys, other requests and malformed ones, and keeps serving the connection', async () => {
    const key = parseSshPrivateKey(execFileSync('cat', [keygen('fail', ['-t', 'ed25519'])]).toString());
    const other = parseSshPrivateKey(execFileSync('cat', [keygen('fail-other', ['-t', 'ed25519'])]).toString());
    const agent = createSshKeyAgent([key]);
    expect([...(await ask(agent, signRequest(other, Buffer.from('x'), 0)))]).toEqual([5]);
    expect([...(await ask(agent, Buffer.from([17, 0, 0])))]).toEqual([5]); // ADD_IDENTITY: read-only
    expect([...(await ask(agent, Buffer.from([13, 0, 0, 9])))]).toEqual([5]); // truncated SIGN_REQUEST
    expect([...(await ask(agent, Buffer.from([27])))]).toEqual([5]); // extensions

    // Two requests in one write: two answers, in order.
    const conn = agent.connect();
    const chunks: Buffer[] = [];
    conn.on('data', (c: Buffer) => chunks.push(c));
    conn.end(Buffer.from([0, 0, 0, 1, 99, 0, 0, 0, 1, 11]));
    await new Promise((resolve) => conn.once('close', resolve));
    const out = Buffer.concat(chunks);
    expect([...out.subarray(0, 5)]).toEqual([0, 0, 0, 1, 5]);
    expect(out[9]).toBe(12);
    expect(out.readUInt32BE(10)).toBe(1);
  });

  it('reads PKCS#8 PEM keys node:crypto writes (ed25519 and ecdsa)', () => {
    const ed = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    expect(parseSshPrivateKey(ed).type).toBe('ssh-ed25519');
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    expect(parseSshPrivateKey(ec).type).toBe('ecdsa-sha2-nistp256');
  });

  it('refuses encrypted keys and non-keys with a reason', () => {
    const enc = join(dir, 'enc');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'secret', '-f', enc]);
    expect(() => parseSshPrivateKey(execFileSync('cat', [enc]).toString())).toThrow(/the key is encrypted/);
    const encPem = generateKeyPairSync('ec', { namedCurve: 'P-256' })
      .privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'x' })
      .toString();
    expect(() => parseSshPrivateKey(encPem)).toThrow(/the key is encrypted/);
    expect(() => parseSshPrivateKey(execFileSync('cat', [`${enc}.pub`]).toString())).toThrow(SshKeyParseError);
  });

  it('--ssh ID=KEYFILE: a socket serves as before, a key file gets the in-process agent, a bad file is a usage error naming the flag and file', async () => {
    const key = keygen('flag', ['-t', 'ed25519']);
    const enc = join(dir, 'flag-enc');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'pw', '-f', enc]);
    const unreadable = join(dir, 'flag-dir');
    execFileSync('mkdir', [unreadable]);
    const agents = (id: string, paths: string[]) => sessionSshAgents({ ssh: [{ id, paths }] } as unknown as BuildOptions);

    const [agent] = agents('mykey', [key, `${key}`]);
    expect(agent).toMatchObject({ id: 'mykey', source: `${key},${key}` });
    expect(() => agents('mykey', [enc])).toThrow(new RegExp(`invalid argument "mykey=${enc}" for "--ssh" flag: failed to parse key file "${enc}": the key is encrypted`));
    expect(() => agents('x', [unreadable])).toThrow(new RegExp(`"--ssh" flag: failed to read key file "${unreadable}": EISDIR`));
    expect(() => agents('x', [`${key}.pub`])).toThrow(/"--ssh" flag: failed to parse key file ".*flag\.pub": not a private key/);

    const { socket, server } = await serve(createSshKeyAgent([]), 'flag');
    try {
      expect(agents('default', [socket])).toEqual([{ id: 'default', socket }]);
      expect(() => agents('default', [socket, key])).toThrow(/"--ssh" flag: agent sockets and key files cannot be mixed/);
    } finally {
      server.close();
    }
  });
});
