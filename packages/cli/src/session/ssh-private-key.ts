import { createPrivateKey, sign, type JsonWebKey, type KeyObject } from 'node:crypto';

/**
 * A private key loaded for the in-process SSH agent (`--ssh ID=KEYFILE`):
 * its public key blob in SSH wire form and a signer producing SSH signature
 * blobs. Keys come from OpenSSH's own format (`-----BEGIN OPENSSH PRIVATE
 * KEY-----`, unencrypted) or from PEM (PKCS#1, SEC1, PKCS#8) read by node:crypto.
 */
export interface SshPrivateKey {
  /** `ssh-ed25519`, `ssh-rsa` or `ecdsa-sha2-nistp256|384|521`. */
  readonly type: string;
  /** The public key as SSH encodes it (RFC 4253 §6.6): what an agent lists and a sign request names. */
  readonly publicBlob: Buffer;
  readonly comment: string;
  /**
   * Signs `data`; returns the signature blob (string algorithm, string signature).
   * RSA honours the agent flags SSH_AGENT_RSA_SHA2_256 (2) and _512 (4), else ssh-rsa (SHA-1).
   */
  sign(data: Buffer, flags: number): Buffer;
}

/** Why a key file cannot be loaded; the caller names the flag and the file. */
export class SshKeyParseError extends Error {}

const RSA_SHA2_256 = 2;
const RSA_SHA2_512 = 4;

/** Curves by their SSH name, with their JWK name and the hash ECDSA uses on them (RFC 5656 §6.2.1). */
const CURVES: Record<string, { jwk: string; hash: string; bytes: number }> = {
  nistp256: { jwk: 'P-256', hash: 'sha256', bytes: 32 },
  nistp384: { jwk: 'P-384', hash: 'sha384', bytes: 48 },
  nistp521: { jwk: 'P-521', hash: 'sha512', bytes: 66 },
};
const CURVE_BY_JWK = new Map(Object.entries(CURVES).map(([name, c]) => [c.jwk, name]));

/** Parses one private key file's text. Throws SshKeyParseError (encrypted, unknown type, malformed). */
export function parseSshPrivateKey(text: string): SshPrivateKey {
  const openssh = /-----BEGIN OPENSSH PRIVATE KEY-----([\s\S]*?)-----END OPENSSH PRIVATE KEY-----/.exec(text);
  if (openssh) return parseOpenSsh(Buffer.from(openssh[1]!.replace(/\s+/g, ''), 'base64'));
  if (!/-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(text)) throw new SshKeyParseError('not a private key (expected an OpenSSH or PEM private key)');
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type:\s*4,ENCRYPTED/.test(text)) throw new SshKeyParseError('the key is encrypted (passphrase-protected keys are not supported; load it into ssh-agent and pass the agent socket)');
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: text, format: 'pem' });
  } catch (err) {
    throw new SshKeyParseError(`cannot read the PEM key: ${(err as Error).message}`);
  }
  return fromKeyObject(key, '');
}

// --- SSH wire encoding (RFC 4251 §5) ---

export function sshString(b: Buffer | string): Buffer {
  const data = typeof b === 'string' ? Buffer.from(b) : b;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  return Buffer.concat([len, data]);
}

/** A positive integer as an mpint: big-endian, no leading zeros, a zero byte added when the top bit is set. */
function sshMpint(magnitude: Buffer): Buffer {
  let i = 0;
  while (i < magnitude.length && magnitude[i] === 0) i++;
  let b = magnitude.subarray(i);
  if (b.length > 0 && b[0]! & 0x80) b = Buffer.concat([Buffer.alloc(1), b]);
  return sshString(b);
}

/** Reads SSH wire fields from a buffer; any read past the end is a parse error. */
export class SshReader {
  #off = 0;
  constructor(private readonly buf: Buffer) {}
  get remaining(): number {
    return this.buf.length - this.#off;
  }
  uint32(): number {
    if (this.remaining < 4) throw new SshKeyParseError('truncated key data');
    const v = this.buf.readUInt32BE(this.#off);
    this.#off += 4;
    return v;
  }
  string(): Buffer {
    const len = this.uint32();
    if (this.remaining < len) throw new SshKeyParseError('truncated key data');
    const v = this.buf.subarray(this.#off, this.#off + len);
    this.#off += len;
    return v;
  }
  text(): string {
    return this.string().toString('utf8');
  }
  /** An mpint as its unsigned magnitude (leading zero bytes dropped). */
  mpint(): Buffer {
    const b = this.string();
    let i = 0;
    while (i < b.length && b[i] === 0) i++;
    return b.subarray(i);
  }
}

// --- OpenSSH's key format (PROTOCOL.key in openssh-portable) ---

const OPENSSH_MAGIC = Buffer.from('openssh-key-v1\0');

function parseOpenSsh(raw: Buffer): SshPrivateKey {
  if (!raw.subarray(0, OPENSSH_MAGIC.length).equals(OPENSSH_MAGIC)) throw new SshKeyParseError('not an OpenSSH private key (bad magic)');
  const r = new SshReader(raw.subarray(OPENSSH_MAGIC.length));
  const cipher = r.text();
  const kdf = r.text();
  r.string(); // kdf options
  if (cipher !== 'none' || kdf !== 'none') throw new SshKeyParseError(`the key is encrypted (cipher ${cipher}; passphrase-protected keys are not supported; load it into ssh-agent and pass the agent socket)`);
  const count = r.uint32();
  if (count !== 1) throw new SshKeyParseError(`expected one key in the file, found ${count}`);
  r.string(); // public key (repeated in the private section)
  const priv = new SshReader(r.string());
  if (priv.uint32() !== priv.uint32()) throw new SshKeyParseError('corrupt private section (check values differ)');
  const type = priv.text();
  let jwk: JsonWebKey;
  switch (type) {
    case 'ssh-ed25519': {
      const pub = priv.string();
      const secret = priv.string(); // seed (32) || public (32)
      if (pub.length !== 32 || secret.length !== 64) throw new SshKeyParseError('malformed ed25519 key');
      jwk = { kty: 'OKP', crv: 'Ed25519', x: b64url(pub), d: b64url(secret.subarray(0, 32)) };
      break;
    }
    case 'ssh-rsa': {
      const [n, e, d, iqmp, p, q] = [priv.mpint(), priv.mpint(), priv.mpint(), priv.mpint(), priv.mpint(), priv.mpint()];
      const dBig = toBig(d);
      // JWK wants the CRT exponents too; OpenSSH stores only iqmp (= q^-1 mod p, JWK's qi).
      const dp = fromBig(dBig % (toBig(p) - 1n));
      const dq = fromBig(dBig % (toBig(q) - 1n));
      jwk = { kty: 'RSA', n: b64url(n), e: b64url(e), d: b64url(d), p: b64url(p), q: b64url(q), dp: b64url(dp), dq: b64url(dq), qi: b64url(iqmp) };
      break;
    }
    case 'ecdsa-sha2-nistp256':
    case 'ecdsa-sha2-nistp384':
    case 'ecdsa-sha2-nistp521': {
      const curveName = priv.text();
      const curve = CURVES[curveName];
      const point = priv.string();
      const d = priv.mpint();
      if (!curve || `ecdsa-sha2-${curveName}` !== type || point.length !== 1 + 2 * curve.bytes || point[0] !== 4) throw new SshKeyParseError(`malformed ${type} key`);
      jwk = {
        kty: 'EC',
        crv: curve.jwk,
        x: b64url(point.subarray(1, 1 + curve.bytes)),
        y: b64url(point.subarray(1 + curve.bytes)),
        d: b64url(leftPad(d, curve.bytes)),
      };
      break;
    }
    default:
      throw new SshKeyParseError(`unsupported key type ${type} (ed25519, rsa and ecdsa keys are supported)`);
  }
  const comment = priv.text();
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: jwk, format: 'jwk' });
  } catch (err) {
    throw new SshKeyParseError(`malformed ${type} key: ${(err as Error).message}`);
  }
  return fromKeyObject(key, comment);
}

// --- One KeyObject as an SSH key ---

function fromKeyObject(key: KeyObject, comment: string): SshPrivateKey {
  const jwk = key.export({ format: 'jwk' });
  switch (key.asymmetricKeyType) {
    case 'ed25519': {
      const type = 'ssh-ed25519';
      return {
        type,
        comment,
        publicBlob: Buffer.concat([sshString(type), sshString(fromB64url(jwk.x))]),
        sign: (data) => Buffer.concat([sshString(type), sshString(sign(null, data, key))]),
      };
    }
    case 'rsa': {
      const type = 'ssh-rsa';
      return {
        type,
        comment,
        publicBlob: Buffer.concat([sshString(type), sshMpint(fromB64url(jwk.e)), sshMpint(fromB64url(jwk.n))]),
        sign: (data, flags) => {
          const [alg, hash] = flags & RSA_SHA2_512 ? ['rsa-sha2-512', 'sha512'] : flags & RSA_SHA2_256 ? ['rsa-sha2-256', 'sha256'] : ['ssh-rsa', 'sha1'];
          return Buffer.concat([sshString(alg), sshString(sign(hash, data, key))]);
        },
      };
    }
    case 'ec': {
      const curveName = CURVE_BY_JWK.get(jwk.crv ?? '');
      const curve = curveName ? CURVES[curveName] : undefined;
      if (!curveName || !curve) throw new SshKeyParseError(`unsupported EC curve ${jwk.crv ?? '?'} (nistp256, nistp384 and nistp521 are supported)`);
      const type = `ecdsa-sha2-${curveName}`;
      const point = Buffer.concat([Buffer.from([4]), leftPad(fromB64url(jwk.x), curve.bytes), leftPad(fromB64url(jwk.y), curve.bytes)]);
      return {
        type,
        comment,
        publicBlob: Buffer.concat([sshString(type), sshString(curveName), sshString(point)]),
        sign: (data) => {
          // SSH wants r and s as two mpints (RFC 5656 §3.1.2), not DER.
          const rs = sign(curve.hash, data, { key, dsaEncoding: 'ieee-p1363' });
          const half = rs.length / 2;
          return Buffer.concat([sshString(type), sshString(Buffer.concat([sshMpint(rs.subarray(0, half)), sshMpint(rs.subarray(half))]))]);
        },
      };
    }
    default:
      throw new SshKeyParseError(`unsupported key type ${key.asymmetricKeyType ?? '?'} (ed25519, rsa and ecdsa keys are supported)`);
  }
}

function b64url(b: Buffer): string {
  return b.toString('base64url');
}
function fromB64url(s: string | undefined): Buffer {
  return Buffer.from(s ?? '', 'base64url');
}
function leftPad(b: Buffer, len: number): Buffer {
  return b.length >= len ? b : Buffer.concat([Buffer.alloc(len - b.length), b]);
}
function toBig(b: Buffer): bigint {
  return b.length === 0 ? 0n : BigInt(`0x${b.toString('hex')}`);
}
function fromBig(v: bigint): Buffer {
  let hex = v.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  return Buffer.from(hex, 'hex');
}
