import path from 'node:path';
import { KilnError, runLight } from '@kiln/common';

/** What one CNI plugin call needs besides its config (CNI spec, "Parameters"). */
export interface CniCall {
  command: 'ADD' | 'DEL' | 'CHECK';
  containerId: string;
  /** Path of the network namespace; may be empty for DEL when it is gone. */
  netns: string;
  ifname: string;
  pluginDir: string;
  /** Run the plugin holding a shared flock(1) on this file (see BridgeLock). */
  sharedLock?: string;
}

/**
 * Runs the plugin `config.type` from `pluginDir` with the CNI environment
 * and `config` as JSON on stdin; resolves with its parsed stdout (the
 * result for ADD, undefined for an empty answer). A non-zero exit rejects
 * with the plugin's error message (CNI error object `msg` + `details`).
 */
export async function invokeCni(call: CniCall, config: Record<string, unknown>): Promise<Record<string, unknown> | undefined> {
  const plugin = String(config.type);
  const out: Uint8Array[] = [];
  const err: Uint8Array[] = [];
  const binary = path.join(call.pluginDir, plugin);
  const [cmd, args] = call.sharedLock ? ['flock', ['-s', call.sharedLock, binary]] : [binary, []];
  const exit = await runLight(cmd, args, {
    stdin: Buffer.from(JSON.stringify(config)),
    env: {
      CNI_COMMAND: call.command,
      CNI_CONTAINERID: call.containerId,
      CNI_NETNS: call.netns,
      CNI_IFNAME: call.ifname,
      CNI_PATH: call.pluginDir,
    },
    stdout: (b) => out.push(b),
    stderr: (b) => err.push(b),
  });
  const stdout = Buffer.concat(out).toString();
  if (exit.code === 0) return stdout.trim() ? (JSON.parse(stdout) as Record<string, unknown>) : undefined;
  let message = Buffer.concat(err).toString().trim() || (exit.signal ? `killed by ${exit.signal}` : `exit status ${exit.code}`);
  try {
    const e = JSON.parse(stdout) as { msg?: string; details?: string };
    if (e.msg) message = e.details ? `${e.msg}: ${e.details}` : e.msg;
  } catch {
    // not a CNI error object: keep stderr
  }
  throw new KilnError('internal', `CNI plugin ${plugin} ${call.command} for ${call.containerId} failed: ${message}`, { plugin, command: call.command });
}
