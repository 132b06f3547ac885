import type { llb } from '@kiln/api';
import type { State } from '@kiln/llb';

/**
 * A pluggable frontend: it serves one or more names (what `# syntax=NAME`,
 * `--frontend NAME` or the `BUILDKIT_SYNTAX` build arg select) and turns a
 * build description into LLB. It reads inputs only through `ctx` and must
 * honour `ctx.signal`. Bad input is a KilnError (e.g. `SourceError` or
 * `InvalidArgumentError` from @kiln/common) naming the file and line in
 * its details (`file`, `line`): the client prints them.
 */
export interface KilnFrontend {
  /** Names served, e.g. ["kiln-yaml.v0"]: `[A-Za-z0-9._/:@-]+`, matched exactly. */
  readonly names: readonly string[];
  solve(ctx: FrontendContext): Promise<FrontendOutput>;
}

/** What a frontend gets for one build. */
export interface FrontendContext {
  buildId: string;
  /**
   * BuildKit-style options from the client: `filename` (the build file in
   * the `dockerfile` dir, default "Dockerfile"), `target`, `build-arg:K`,
   * `platform`, `build-platform`, `context:NAME`, `label:K`, `no-cache` ...
   */
  attrs: Readonly<Record<string, string>>;
  /** The build file's name: `attrs.filename` or "Dockerfile". */
  filename: string;
  /** Reads a file the client shares: dir "dockerfile" (the build file's dir) or "context"; undefined when absent. */
  readFile(dir: string, path: string, maxBytes?: number): Promise<Uint8Array | undefined>;
  /** Builds `state` (or a marshalled definition) now, as part of this build, so its files can be read. */
  solve(state: State | llb.Definition): Promise<SolvedResult>;
  /** Pins an image reference (digest) and reads its config for a platform, with the client's registry credentials. */
  resolveImageConfig(ref: string, platform?: { os: string; architecture: string; variant?: string }): Promise<{ digest: string; config: ImageConfig }>;
  signal: AbortSignal;
}

/** A result solved through `FrontendContext.solve`; readable until the build ends. */
export interface SolvedResult {
  readonly id: string;
  /** A regular file's bytes (`length` 0: the rest, at most 16 MiB per call). */
  readFile(path: string, range?: { offset?: number; length?: number }): Promise<Uint8Array>;
  /** The entries of a directory, optionally only names matching a pattern (`*.txt`). */
  readDir(path: string, pattern?: string): Promise<FileInfo[]>;
  /** One path; a final symlink is described, not followed. */
  stat(path: string): Promise<FileInfo>;
  /** Whether `path` exists (symlinks followed inside the result). */
  exists(path: string): Promise<boolean>;
}

export interface FileInfo {
  path: string;
  /** Unix st_mode: type bits and permissions. */
  mode: number;
  size: number;
  uid: number;
  gid: number;
  linkname: string;
  isDirectory: boolean;
}

/** The OCI image config (the parts a frontend usually sets). */
export interface ImageConfig {
  architecture?: string;
  os?: string;
  config?: {
    Env?: string[];
    Cmd?: string[];
    Entrypoint?: string[];
    WorkingDir?: string;
    User?: string;
    Labels?: Record<string, string>;
    ExposedPorts?: Record<string, object>;
  };
  [key: string]: unknown;
}

/** What a frontend returns: the LLB of the result and, for an image, its config. */
export interface FrontendOutput {
  /** The result: a State (marshalled by the SDK with `sources`) or a definition. */
  result: State | llb.Definition;
  /** The image config of the result (omit for a plain filesystem result). */
  imageConfig?: ImageConfig;
  /** Shown in error excerpts and source maps: the build file. */
  sources?: { filename: string; data: Uint8Array; language?: string }[];
  metadata?: Record<string, string>;
}
