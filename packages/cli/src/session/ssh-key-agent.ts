import { Duplex } from 'node:stream';
import { SshReader, sshString, type SshPrivateKey } from './ssh-private-key.js';

/**
 * A read-only SSH agent over keys the CLI loaded (`--ssh ID=KEYFILE`), as
 * buildx serves key files: the session relays each `type=ssh` mount
 * connection to `connect()` as it would to an agent socket. It speaks the
 * agent protocol (draft-miller-ssh-agent): it lists its keys and signs with
 * them; every other request (add, remove, lock, extensions) gets FAILURE.
 */
export interface SshKeyAgent {
  /** A new agent connection: write requests into it, read answers from it; `end()` closes it. */
  connect(): Duplex;
}

// Message numbers (draft-miller-ssh-agent §6.1).
const SSH_AGENT_FAILURE = 5;
const SSH_AGENTC_REQUEST_IDENTITIES = 11;
const SSH_AGENT_IDENTITIES_ANSWER = 12;
const SSH_AGENTC_SIGN_REQUEST = 13;
const SSH_AGENT_SIGN_RESPONSE = 14;
/** OpenSSH's own agents refuse bigger messages too (256 KiB). */
const MAX_MESSAGE_BYTES = 256 * 1024;

export function createSshKeyAgent(keys: readonly SshPrivateKey[]): SshKeyAgent {
  return { connect: () => new AgentConnection(keys) };
}

/** One agent connection: length-prefixed requests in, one answer per request out, in order. */
class AgentConnection extends Duplex {
  #pending: Buffer = Buffer.alloc(0);

  constructor(private readonly keys: readonly SshPrivateKey[]) {
    super();
  }

  override _read(): void {
    // Answers are pushed as requests complete; nothing to pull.
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    while (this.#pending.length >= 4) {
      const len = this.#pending.readUInt32BE(0);
      if (len === 0 || len > MAX_MESSAGE_BYTES) {
        done(new Error(`SSH agent request of ${len} bytes refused`));
        return;
      }
      if (this.#pending.length < 4 + len) break;
      const msg = this.#pending.subarray(4, 4 + len);
      this.#pending = this.#pending.subarray(4 + len);
      this.push(frame(this.#answer(msg)));
    }
    done();
  }

  override _final(done: (err?: Error | null) => void): void {
    this.push(null);
    done();
  }

  #answer(msg: Buffer): Buffer {
    try {
      switch (msg[0]) {
        case SSH_AGENTC_REQUEST_IDENTITIES: {
          const count = Buffer.alloc(4);
          count.writeUInt32BE(this.keys.length);
          return Buffer.concat([Buffer.from([SSH_AGENT_IDENTITIES_ANSWER]), count, ...this.keys.flatMap((k) => [sshString(k.publicBlob), sshString(k.comment)])]);
        }
        case SSH_AGENTC_SIGN_REQUEST: {
          const r = new SshReader(msg.subarray(1));
          const blob = r.string();
          const data = r.string();
          const flags = r.remaining >= 4 ? r.uint32() : 0;
          const key = this.keys.find((k) => k.publicBlob.equals(blob));
          if (!key) return FAILURE;
          return Buffer.concat([Buffer.from([SSH_AGENT_SIGN_RESPONSE]), sshString(key.sign(Buffer.from(data), flags))]);
        }
        default:
          return FAILURE;
      }
    } catch {
      // A malformed request fails alone; the connection stays usable.
      return FAILURE;
    }
  }
}

const FAILURE = Buffer.from([SSH_AGENT_FAILURE]);

function frame(body: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}
