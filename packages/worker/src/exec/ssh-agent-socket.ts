import { chmod, chown, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { createChannel, KilnError, type Logger } from '@kiln/common';

/**
 * Opens one connection to the client's SSH agent `id` through the build's
 * session: `input` goes to the agent (its end half-closes the agent
 * connection), the agent's bytes are yielded until it closes. Ending the
 * iteration early, or `signal`, closes the connection.
 */
export type SshForwarder = (id: string, input: AsyncIterable<Uint8Array>, signal: AbortSignal) => AsyncIterable<Uint8Array>;

export interface SshAgentSocketOptions {
  /** The `--ssh` id the container's connections go to. */
  id: string;
  uid: number;
  gid: number;
  /** Permission bits of the socket file (the mount's `mode`). */
  mode: number;
  forward: SshForwarder;
  logger: Logger;
}

/**
 * A unix socket on the host that stands in for the client's SSH agent inside
 * one exec step: the step sees it through a bind mount, and every connection
 * it makes is relayed byte for byte to the client's agent over the session.
 * `close()` stops listening, ends every relayed connection and removes the
 * socket file.
 */
export class SshAgentSocket {
  private readonly conns = new Set<Socket>();
  private readonly abort = new AbortController();

  private constructor(
    readonly path: string,
    private readonly server: Server,
    private readonly opts: SshAgentSocketOptions,
  ) {
    server.on('connection', (sock) => this.relay(sock));
  }

  /** Listens on `file` (which must not exist) owned by uid:gid with `mode`. */
  static async listen(file: string, opts: SshAgentSocketOptions): Promise<SshAgentSocket> {
    const server = createServer({ allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(new KilnError('internal', `failed to listen for SSH agent connections at ${file}: ${err.message}`, {}, { cause: err })));
      server.listen(file, () => resolve());
    });
    const socket = new SshAgentSocket(file, server, opts);
    try {
      await chown(file, opts.uid, opts.gid);
      await chmod(file, opts.mode & 0o7777);
    } catch (err) {
      await socket.close();
      throw err;
    }
    return socket;
  }

  private relay(sock: Socket): void {
    this.conns.add(sock);
    const toAgent = createChannel<Uint8Array>();
    sock.on('data', (b: Buffer) => {
      // Paced by the session: read no more until the relay took this chunk.
      sock.pause();
      void toAgent.push(Uint8Array.from(b)).then(() => sock.resume());
    });
    sock.once('end', () => toAgent.end());
    sock.once('error', () => toAgent.end());
    sock.once('close', () => {
      toAgent.end();
      this.conns.delete(sock);
    });
    void (async () => {
      try {
        for await (const data of this.opts.forward(this.opts.id, toAgent, this.abort.signal)) {
          if (sock.destroyed) break;
          if (!sock.write(data)) await new Promise<void>((resolve) => sock.once('drain', resolve).once('close', resolve));
        }
        sock.end();
      } catch (err) {
        if (!this.abort.signal.aborted) this.opts.logger.warn({ err, id: this.opts.id }, 'SSH agent connection failed');
        sock.destroy();
      }
    })();
  }

  async close(): Promise<void> {
    this.abort.abort();
    for (const c of this.conns) c.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await rm(this.path, { force: true });
  }
}
