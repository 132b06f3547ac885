import type { State } from '@kiln/llb';
import type { Stage } from '../instructions/types.js';
import type { ImageConfig } from './image-config.js';
import type { Platform } from './platform.js';

/** One stage while it is being converted. */
export interface StageState {
  stage: Stage;
  index: number;
  state: State;
  config: ImageConfig;
  /** What RUN sees and words expand with: the image env, ENV and ARG values, in order. */
  env: Map<string, string>;
  /** ARGs declared in this stage, with their values if any (for RUN history). */
  declaredArgs: { key: string; value?: string }[];
  workdir: string;
  platform: Platform;
  /** CMD was set in this stage (ENTRYPOINT then keeps it). */
  cmdSet: boolean;
  /** An absolute WORKDIR was set in this stage (WorkdirRelativePath). */
  workdirSet: boolean;
  status: 'pending' | 'converting' | 'done';
  /** Replaced by a --build-context of the same name. */
  override?: State;
}

/** NAME=VALUE list from an env map, in insertion order. */
export function envList(env: ReadonlyMap<string, string>): string[] {
  return [...env].map(([k, v]) => `${k}=${v}`);
}

/** Sets `key` in an image-config env list: replaced in place, else appended. */
export function setEnvEntry(list: string[], key: string, value: string): string[] {
  const out = [...list];
  const i = out.findIndex((e) => e.slice(0, e.indexOf('=') < 0 ? e.length : e.indexOf('=')) === key);
  if (i >= 0) out[i] = `${key}=${value}`;
  else out.push(`${key}=${value}`);
  return out;
}
