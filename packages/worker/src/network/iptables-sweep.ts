import { execLight, runLight } from '@kiln/common';

/**
 * Removes the NAT rules the bridge plugin's ipMasq made for containers whose
 * id starts with one of `containerIdPrefixes` (a POSTROUTING jump per step,
 * commented `name: "<network>" id: "<container id>"`, into a `CNI-<hash>`
 * chain of its own), for steps whose DEL never ran (a killed daemon, or
 * namespaces dropped at shutdown without a DEL). Rules of other containers,
 * on the same network or not, are left alone. One `iptables-restore
 * --noflush` batch does it (two processes, whatever the number of rules:
 * this runs while a stopping daemon may be SIGKILLed); rule by rule when
 * the batch fails (a rule went meanwhile). Returns how many rules it deleted.
 */
export async function sweepMasqueradeRules(containerIdPrefixes: string | readonly string[]): Promise<number> {
  const prefixes = typeof containerIdPrefixes === 'string' ? [containerIdPrefixes] : containerIdPrefixes;
  if (prefixes.length === 0) return 0;
  const { stdout } = await execLight('iptables', ['-w', '-t', 'nat', '-S']);
  const markers = prefixes.map((p) => ` id: "${p}`);
  const ours = stdout
    .split('\n')
    .filter((l) => l.startsWith('-A '))
    .map(splitRule)
    .filter((args) => args.some((a) => a.startsWith('name: "') && markers.some((m) => a.includes(m))));
  if (ours.length === 0) return 0;
  const chains = new Set(ours.map((args) => args[1]!).filter((c) => c.startsWith('CNI-')));
  // Jumps first (outside our chains), then our chains are emptied and dropped.
  const jumps = ours.filter((a) => !chains.has(a[1]!));
  const batch = ['*nat', ...jumps.map((a) => ['-D', ...a.slice(1)].map(quoteRuleArg).join(' ')), ...[...chains].flatMap((c) => [`-F ${c}`, `-X ${c}`]), 'COMMIT', ''].join('\n');
  const restored = await runLight('iptables-restore', ['--noflush'], { stdin: Buffer.from(batch) }).catch(() => ({ code: 1 }));
  if (restored.code === 0) return ours.length;
  let deleted = 0;
  for (const args of jumps) {
    await execLight('iptables', ['-w', '-t', 'nat', '-D', ...args.slice(1)]).then(() => deleted++, () => undefined);
  }
  for (const chain of chains) {
    deleted += ours.filter((a) => a[1] === chain).length;
    await execLight('iptables', ['-w', '-t', 'nat', '-F', chain]).catch(() => undefined);
    await execLight('iptables', ['-w', '-t', 'nat', '-X', chain]).catch(() => undefined);
  }
  return deleted;
}

/** One argument of a rule line as iptables-restore reads it (double quotes, backslash escapes). */
function quoteRuleArg(a: string): string {
  return /^[A-Za-z0-9_./:!-]+$/.test(a) ? a : `"${a.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

/** Splits one `iptables -S` line into arguments (double quotes with backslash escapes, as iptables prints comments). */
export function splitRule(line: string): string[] {
  const args: string[] = [];
  let cur = '';
  let inArg = false;
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quoted) {
      if (c === '\\' && i + 1 < line.length) cur += line[++i];
      else if (c === '"') quoted = false;
      else cur += c;
    } else if (c === '"') {
      quoted = true;
      inArg = true;
    } else if (c === ' ') {
      if (inArg) args.push(cur);
      cur = '';
      inArg = false;
    } else {
      cur += c;
      inArg = true;
    }
  }
  if (inArg) args.push(cur);
  return args;
}
