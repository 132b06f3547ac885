import { execLight } from '@kiln/common';

/**
 * Removes the NAT rules the bridge plugin's ipMasq made for containers whose
 * id starts with `containerIdPrefix` (a POSTROUTING jump per step, commented
 * `name: "<network>" id: "<container id>"`, into a `CNI-<hash>` chain of its
 * own), for steps whose DEL never ran (a killed daemon). Rules of other
 * containers, on the same network or not, are left alone.
 * Returns how many rules it deleted.
 */
export async function sweepMasqueradeRules(containerIdPrefix: string): Promise<number> {
  const { stdout } = await execLight('iptables', ['-w', '-t', 'nat', '-S']);
  const marker = ` id: "${containerIdPrefix}`;
  const ours = stdout
    .split('\n')
    .filter((l) => l.startsWith('-A '))
    .map(splitRule)
    .filter((args) => args.some((a) => a.startsWith('name: "') && a.includes(marker)));
  const chains = new Set(ours.map((args) => args[1]!).filter((c) => c.startsWith('CNI-')));
  let deleted = 0;
  // Jumps first (outside our chains), then our chains are emptied and dropped.
  for (const args of ours.filter((a) => !chains.has(a[1]!))) {
    await execLight('iptables', ['-w', '-t', 'nat', '-D', ...args.slice(1)]).then(() => deleted++, () => undefined);
  }
  for (const chain of chains) {
    deleted += ours.filter((a) => a[1] === chain).length;
    await execLight('iptables', ['-w', '-t', 'nat', '-F', chain]).catch(() => undefined);
    await execLight('iptables', ['-w', '-t', 'nat', '-X', chain]).catch(() => undefined);
  }
  return deleted;
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
