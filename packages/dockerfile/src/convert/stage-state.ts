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
  /** `env` as a NAME=VALUE list, kept until the env changes (RUN reads it often). */
  envListCache?: string[];
  /** The image config's env (ENV only), written to config.Env when the stage is done. */
  imageEnv: Map<string, string>;
  /** ARGs declared in this stage, with their values if any (for RUN history). */
  declaredArgs: { key: string; value?: string }[];
  workdir: string;
  platform: Platform;
  /** CMD was set in this stage (ENTRYPOINT then keeps it). */
  cmdSet: boolean;
  /** An absolute WORKDIR was set in this stage (WorkdirRelativePath). */
  workdirSet: boolean;
  status: 'pending' | 'converting' | 'done';
  /** The FROM is an image pull, numbered as the first step. */
  fromStep?: boolean;
  /** Steps named so far, and how many the stage has (see Converter.stepName). */
  stepIndex?: number;
  stepTotal?: number;
  /** Replaced by a --build-context of the same name. */
  override?: State;
}

/** NAME=VALUE list from an env map, in insertion order. */
export function envList(env: ReadonlyMap<string, string>): string[] {
  return [...env].map(([k, v]) => `${k}=${v}`);
}

/** Sets a variable RUN sees (ENV or ARG); a key keeps its first position. */
export function setRunEnv(s: StageState, key: string, value: string): void {
  s.env.set(key, value);
  s.envListCache = undefined;
}

/** The env RUN gets, as a list. */
export function runEnvList(s: StageState): string[] {
  return (s.envListCache ??= envList(s.env));
}
