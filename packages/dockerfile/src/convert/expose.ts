/** EXPOSE values as BuildKit's port specs: `[ip:][hostPort:]port[-end][/proto]` → `PORT/proto` entries. */
import { isIP } from 'node:net';

export interface ExposeLint {
  /** ExposeProtoCasing: the value as written. */
  protoCasing(raw: string): void;
  /** ExposeInvalidFormat: an IP or host port given. */
  invalidFormat(raw: string): void;
}

/** Throws Error with BuildKit's messages on a malformed value. */
export function parseExposePort(raw: string, lint: ExposeLint): string[] {
  const parts = raw.split(':');
  const container = parts[parts.length - 1]!;
  const hostPort = parts.length >= 2 ? parts[parts.length - 2]! : '';
  let ip = parts.length >= 3 ? parts.slice(0, -2).join(':') : '';
  const slash = container.indexOf('/');
  const port = slash < 0 ? container : container.slice(0, slash);
  const protoRaw = slash < 0 ? '' : container.slice(slash + 1);
  if (port === '') throw new Error(`invalid port: ${JSON.stringify(raw)}: no port specified`);
  const proto = protoRaw === '' ? 'tcp' : protoRaw;
  if (!['tcp', 'udp', 'sctp'].includes(proto.toLowerCase())) throw new Error(`invalid port: ${JSON.stringify(raw)}: invalid proto: ${protoRaw}`);
  if (proto !== proto.toLowerCase()) lint.protoCasing(raw);
  if (ip !== '' || hostPort !== '') lint.invalidFormat(raw);
  if (ip.startsWith('[') && ip.endsWith(']')) ip = ip.slice(1, -1);
  if (ip !== '' && isIP(ip) === 0) throw new Error(`invalid IP address: ${ip}`);
  const [start, end] = portRange(port, 'containerPort');
  if (hostPort !== '') {
    const [hs, he] = portRange(hostPort, 'hostPort');
    if (end - start !== he - hs && end !== start) throw new Error(`invalid ranges specified for container and host Ports: ${port} and ${hostPort}`);
  }
  const out: string[] = [];
  for (let p = start; p <= end; p++) out.push(`${p}/${proto.toLowerCase()}`);
  return out;
}

function portRange(value: string, what: string): [number, number] {
  const dash = value.indexOf('-');
  const a = dash < 0 ? value : value.slice(0, dash);
  const b = dash < 0 ? a : value.slice(dash + 1);
  const num = (x: string) => (/^\d{1,5}$/.test(x) && Number(x) <= 65535 ? Number(x) : NaN);
  const start = num(a);
  const end = num(b);
  if (Number.isNaN(start) || Number.isNaN(end)) throw new Error(`invalid ${what}: ${value}`);
  if (end < start) throw new Error(`invalid port range: ${value}`);
  return [start, end];
}
