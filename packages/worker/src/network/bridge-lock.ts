import { chmod, mkdir, open } from 'node:fs/promises';
import path from 'node:path';
import { execLight } from '@kiln/common';

/**
 * The host-wide lock of one bridge, shared by every daemon on the host
 * (`<hostStateDir>/bridges/<bridge>.lock`). A bridge plugin ADD runs holding
 * it shared (`CniCall.sharedLock`); removing the bridge holds it exclusive.
 * Without it a closing daemon could find no veth on the bridge and delete it
 * while another daemon's ADD had just found the bridge and was about to
 * attach its veth: that step would run without a network. flock(1), because
 * Node has no flock and a lock held by a killed process goes with it.
 */
export async function bridgeLockFile(hostStateDir: string, bridge: string): Promise<string> {
  const dir = path.join(hostStateDir, 'bridges');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const file = path.join(dir, `${bridge}.lock`);
  // flock(1) would create it 0666 minus umask; the dir is root-only anyway.
  await (await open(file, 'a', 0o600)).close();
  return file;
}

/**
 * Under the exclusive lock: when no interface is attached to `bridge` (no
 * daemon has a step namespace on it, pooled or killed), deletes the bridge
 * and the IPAM allocations of its network (`allocationsDir`: files of
 * namespaces that no longer exist). Resolves whether it removed the bridge.
 */
export async function removeBridgeIfUnused(lockFile: string, bridge: string, allocationsDir: string): Promise<boolean> {
  const script = 'if [ -n "$(ip -o link show master "$1" 2>/dev/null)" ]; then echo busy; exit 0; fi; ip link delete "$1" type bridge 2>/dev/null && echo removed; rm -rf "$2"';
  const { stdout } = await execLight('flock', ['-x', '-w', '30', lockFile, 'sh', '-c', script, 'sh', bridge, allocationsDir]);
  return stdout.trim() === 'removed';
}
