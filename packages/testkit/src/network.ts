import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { randomBytes, randomInt } from 'node:crypto';

/** A bridge name and /24 subnet of its own for one test's CNI network (parallel tests never share one). */
export interface TestNetwork {
  bridge: string;
  subnet: string;
  /** The bridge's address once a step attached: where a test's servers listen. */
  gateway: string;
  /** `kiln daemon` flags selecting CNI mode on this bridge and subnet. */
  args: string[];
}

/** Picks a random bridge `kt<hex>` and a /24 in 10.213.128.0/17 that no route of this host covers yet. */
export function testNetwork(): TestNetwork {
  const routes = execFileSync('ip', ['-4', 'route', 'show'], { encoding: 'utf8' });
  for (let tries = 0; tries < 50; tries++) {
    const third = 128 + randomInt(128);
    const prefix = `10.213.${third}.`;
    if (routes.includes(prefix)) continue;
    const bridge = `kt${randomBytes(4).toString('hex')}`;
    const subnet = `${prefix}0/24`;
    return { bridge, subnet, gateway: `${prefix}1`, args: ['--network-mode', 'cni', '--network-bridge', bridge, '--network-subnet', subnet] };
  }
  throw new Error('no free test subnet in 10.213.128.0/17');
}

/** Deletes a test bridge if it is still there (a daemon removes it at a clean stop), and its lock file under kilnd's host-wide /run/kiln-net. */
export function removeTestBridge(bridge: string): void {
  try {
    execFileSync('ip', ['link', 'delete', bridge], { stdio: 'ignore' });
  } catch {
    // already gone
  }
  rmSync(`/run/kiln-net/bridges/${bridge}.lock`, { force: true });
}
