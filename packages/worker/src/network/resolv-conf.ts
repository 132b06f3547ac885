import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';

/** Used when no usable resolver is left, as BuildKit does. */
export const FALLBACK_NAMESERVERS = ['8.8.8.8', '8.8.4.4'];
const HOST_RESOLV_CONF = '/etc/resolv.conf';
/** systemd-resolved's list of upstream servers (the stub 127.0.0.53 is unreachable from a step's namespace). */
const RESOLVED_UPSTREAM = '/run/systemd/resolve/resolv.conf';

/**
 * The /etc/resolv.conf of a step. In the host's namespace the host file as
 * it is; otherwise its `search`/`domain`/`options` lines and nameservers,
 * minus loopback ones (127.x, ::1: they answer only on the host) and IPv6
 * ones (the step network is IPv4), with FALLBACK_NAMESERVERS when none is
 * left. `source` defaults to /etc/resolv.conf; a missing file counts as empty.
 */
export async function resolvConfFor(opts: { hostNetwork: boolean; source?: string }): Promise<string> {
  let text = await readFile(opts.source ?? HOST_RESOLV_CONF, 'utf8').catch(() => '');
  if (opts.hostNetwork) return text.endsWith('\n') || text === '' ? text : `${text}\n`;
  if (!opts.source && nameservers(text).every((ns) => ns.startsWith('127.'))) {
    const upstream = await readFile(RESOLVED_UPSTREAM, 'utf8').catch(() => undefined);
    if (upstream !== undefined) text = upstream;
  }
  return filterResolvConf(text);
}

/** The pure part of resolvConfFor for a namespace of its own. */
export function filterResolvConf(text: string): string {
  const out: string[] = [];
  let servers = 0;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const [key, value] = line.split(/\s+/, 2);
    if (key === 'nameserver') {
      if (!value || isIP(value) !== 4 || value.startsWith('127.')) continue;
      servers++;
      out.push(`nameserver ${value}`);
    } else if (key === 'search' || key === 'domain' || key === 'options') {
      out.push(line);
    }
  }
  if (servers === 0) out.push(...FALLBACK_NAMESERVERS.map((s) => `nameserver ${s}`));
  return `${out.join('\n')}\n`;
}

function nameservers(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f[0] === 'nameserver' && f[1])
    .map((f) => f[1]!);
}
