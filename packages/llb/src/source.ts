import { create } from '@bufbuild/protobuf';
import { llb } from '@kiln/api';
import { State, Vertex, metadataOf, type PlatformInit, type StateOptions } from './state.js';

export interface LocalOptions extends StateOptions {
  /** Only these Docker-style patterns are transferred (empty: everything). */
  includePatterns?: string[];
  excludePatterns?: string[];
  followPaths?: string[];
  /** A key shared by builds of the same directory, for incremental transfer. */
  sharedKeyHint?: string;
}

/** The client's shared directory NAME ("context", "dockerfile", ...), read through the session. */
export function local(name: string, opts: LocalOptions = {}): State {
  const attrs: Record<string, string> = {};
  if (opts.includePatterns?.length) attrs['local.includepattern'] = JSON.stringify(opts.includePatterns);
  if (opts.excludePatterns?.length) attrs['local.excludepatterns'] = JSON.stringify(opts.excludePatterns);
  if (opts.followPaths?.length) attrs['local.followpaths'] = JSON.stringify(opts.followPaths);
  if (opts.sharedKeyHint) attrs['local.sharedkeyhint'] = opts.sharedKeyHint;
  return source(`local://${name}`, attrs, opts);
}

export interface ImageOptions extends StateOptions {
  platform?: PlatformInit;
  /** Extra source attrs (e.g. "image.resolvemode"). */
  attrs?: Record<string, string>;
}

/** An image from a registry: `docker-image://REF`. */
export function image(ref: string, opts: ImageOptions = {}): State {
  return source(`docker-image://${ref}`, { ...opts.attrs }, opts, opts.platform);
}

export interface HttpOptions extends StateOptions {
  /** Expected digest of the downloaded file ("sha256:..."). */
  checksum?: string;
  /** File name of the download inside the result (default: from the URL). */
  filename?: string;
  /** File mode of the download (http.perm). */
  mode?: number;
  uid?: number;
  gid?: number;
}

/** A file downloaded over HTTP(S): the URL is the identifier, as BuildKit's `llb.HTTP`. */
export function http(url: string, opts: HttpOptions = {}): State {
  const attrs: Record<string, string> = {};
  if (opts.checksum) attrs['http.checksum'] = opts.checksum;
  if (opts.filename) attrs['http.filename'] = opts.filename;
  if (opts.mode !== undefined) attrs['http.perm'] = `0${opts.mode.toString(8)}`;
  if (opts.uid !== undefined) attrs['http.uid'] = String(opts.uid);
  if (opts.gid !== undefined) attrs['http.gid'] = String(opts.gid);
  return source(url, attrs, opts);
}

export interface GitOptions extends StateOptions {
  /** Keep the .git directory in the result. */
  keepGitDir?: boolean;
  /** The URL as the user wrote it (git.fullurl), e.g. with its scheme or `git@host:` form. */
  fullUrl?: string;
  /** Subdirectory of the repository to keep. */
  subdir?: string;
  /** Expected commit checksum. */
  checksum?: string;
  /** known_hosts lines an SSH remote's host key must match (git.knownsshhosts). */
  knownSshHosts?: string;
  /** The `--ssh` id an SSH remote is fetched with (git.mountsshsock). */
  mountSshSock?: string;
}

/**
 * A git checkout: `git://HOST/PATH[#REF[:SUBDIR]]` with the full URL in
 * `git.fullurl`, as BuildKit's `llb.Git`. `remote` is the URL without its scheme.
 */
export function git(remote: string, ref: string, opts: GitOptions = {}): State {
  let id = `git://${remote}`;
  if (ref || opts.subdir) id += `#${ref}`;
  if (opts.subdir) id += `:${opts.subdir}`;
  const attrs: Record<string, string> = {};
  if (opts.keepGitDir) attrs['git.keepgitdir'] = 'true';
  if (opts.fullUrl) attrs['git.fullurl'] = opts.fullUrl;
  if (opts.checksum) attrs['git.checksum'] = opts.checksum;
  if (opts.knownSshHosts) attrs['git.knownsshhosts'] = opts.knownSshHosts;
  if (opts.mountSshSock) attrs['git.mountsshsock'] = opts.mountSshSock;
  return source(id, attrs, opts);
}

/**
 * An OCI image layout the client shares over the session:
 * `oci-layout://STORE[:TAG][@DIGEST]` (STORE is the session directory),
 * pulled for `platform` like a docker-image source.
 */
export function ociLayout(ref: string, opts: StateOptions & { sessionId?: string; storeId?: string; platform?: PlatformInit } = {}): State {
  const attrs: Record<string, string> = {};
  if (opts.storeId) attrs['oci.store'] = opts.storeId;
  return source(`oci-layout://${ref}`, attrs, opts, opts.platform);
}

/** Any source op by identifier. */
export function source(identifier: string, attrs: Record<string, string>, opts?: StateOptions, platform?: PlatformInit): State {
  const op = create(llb.OpSchema, { op: { case: 'source', value: { identifier, attrs } }, platform });
  return State.fromOutput({ vertex: new Vertex(op, [], metadataOf(opts)), index: 0 }, platform);
}

/** Reads the source attrs back (JSON arrays), tolerating absent keys. */
export function localAttrs(attrs: Record<string, string>): {
  includePatterns: string[];
  excludePatterns: string[];
  followPaths: string[];
} {
  const list = (k: string): string[] => {
    const v = attrs[k];
    if (!v) return [];
    const parsed: unknown = JSON.parse(v);
    return Array.isArray(parsed) ? parsed.map(String) : [];
  };
  return {
    includePatterns: list('local.includepattern'),
    excludePatterns: list('local.excludepatterns'),
    followPaths: list('local.followpaths'),
  };
}
