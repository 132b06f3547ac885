import { InvalidArgumentError } from '../errors/errors.js';

/** A daemon or tier address: `unix:///run/kiln/kiln.sock` or `tcp://127.0.0.1:1234`. */
export type Address = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

/** Parses an address; `field` names the flag it came from for the error. */
export function parseAddress(value: string, field = '--addr'): Address {
  if (value.startsWith('unix://')) {
    const path = value.slice('unix://'.length);
    if (!path.startsWith('/')) throw new InvalidArgumentError(`unix address must be absolute: "${value}"`, field);
    return { kind: 'unix', path };
  }
  const m = /^(?:tcp|http):\/\/(\[[^\]]+\]|[^:/]+):(\d+)\/?$/.exec(value);
  if (m) {
    const port = Number(m[2]);
    if (port >= 0 && port < 65536) return { kind: 'tcp', host: m[1]!.replace(/^\[|\]$/g, ''), port };
  }
  throw new InvalidArgumentError(`invalid address "${value}": want unix:///PATH or tcp://HOST:PORT`, field);
}

export function formatAddress(addr: Address): string {
  return addr.kind === 'unix' ? `unix://${addr.path}` : `tcp://${addr.host.includes(':') ? `[${addr.host}]` : addr.host}:${addr.port}`;
}
