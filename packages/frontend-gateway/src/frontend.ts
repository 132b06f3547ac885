import type { llb } from '@kiln/api';
import type { CredentialStore } from '@kiln/registry';

/** What a frontend may read from the build's client. */
export interface FrontendInputs {
  /** Reads one file of a client directory ("dockerfile", "context"); undefined when absent. */
  readFile(dirName: string, path: string, maxBytes?: number): Promise<Uint8Array | undefined>;
  /** Registry credentials the client offers (its ~/.docker/config.json); absent without a session. */
  registryCredentials?: CredentialStore;
  /** Solves within the build and reads results (the solver's GatewayService); absent where the tier has no gateway client. */
  gateway?: FrontendGateway;
}

/**
 * The part of the solver's GatewayService a built-in frontend uses: a
 * remote build context (git, http) is fetched by the workers as a step of
 * the build, and its Dockerfile read from the result.
 */
export interface FrontendGateway {
  /** Solves `definition` as part of the build (its session, cache and progress); the id names the result until the build ends. */
  solve(definition: llb.Definition, signal?: AbortSignal): Promise<string>;
  /** Reads a regular file of a result (`length` 0: all of it, up to 16 MiB); undefined when the path does not exist. */
  readFile(resultId: string, path: string, length?: number, signal?: AbortSignal): Promise<Uint8Array | undefined>;
}

export interface FrontendRequest {
  buildId: string;
  /**
   * BuildKit-style options: filename, target, build-arg:K, platform (a
   * comma list: several ask for a multi-platform result), build-platform
   * (the worker's, for BUILDPLATFORM; default the host's), context:NAME ...
   */
  attrs: Record<string, string>;
}

export interface FrontendResult {
  definition: llb.Definition;
  /** OCI image config JSON for the target, or empty. */
  imageConfig: Uint8Array;
  metadata: Record<string, string>;
  /** Build-check warnings for the progress stream. */
  warnings?: FrontendWarning[];
  /**
   * Multi-platform builds: one result per target platform, in the order
   * asked; `definition` and `imageConfig` then repeat the first's.
   */
  platforms?: PlatformResult[];
  /**
   * The description asks for another frontend (`# syntax=NAME`): nothing
   * else counts, and the solver sends the request to a frontend serving NAME.
   */
  forward?: { frontend: string; filename: string; line: number };
}

/** The build of one target platform. */
export interface PlatformResult {
  /** "os/arch[/variant]". */
  platform: string;
  definition: llb.Definition;
  imageConfig: Uint8Array;
}

/** A warning about the build description, pointing at lines of the source (definition source 0). */
export interface FrontendWarning {
  /** One line: "Rule: message (file:line)". */
  short: string;
  detail: string[];
  url: string;
  startLine: number;
  endLine: number;
}

/**
 * A frontend turns a build description into LLB. It reads inputs only
 * through `inputs` (so the client sends only what is read), must honour
 * `signal`, and throws SourceError with the file and line for bad input.
 */
export interface Frontend {
  /** The name clients ask for, e.g. "dockerfile.v0". */
  readonly name: string;
  solve(req: FrontendRequest, inputs: FrontendInputs, signal?: AbortSignal): Promise<FrontendResult>;
}
