/** Recognizes remote ADD sources and --build-context values. */

export interface GitUrl {
  /** Host and path without the scheme ("github.com/moby/buildkit.git"). */
  remote: string;
  /** The URL as written, without the fragment. */
  fullUrl: string;
  ref: string;
  subdir: string;
}

export function isHttpUrl(s: string): boolean {
  return /^https?:\/\//i.test(s);
}

/**
 * A git remote: `git@HOST:PATH`, `git://`, `ssh://`, or an http(s) URL whose
 * path ends in `.git`, each with an optional `#REF[:SUBDIR]` fragment.
 */
export function parseGitUrl(s: string): GitUrl | undefined {
  const hash = s.indexOf('#');
  const url = hash >= 0 ? s.slice(0, hash) : s;
  const fragment = hash >= 0 ? s.slice(hash + 1) : '';
  let remote: string | undefined;
  let m: RegExpExecArray | null;
  if ((m = /^[A-Za-z0-9_.-]+@([A-Za-z0-9.-]+):(.+)$/.exec(url)) && !url.includes('://')) remote = `${m[1]}/${m[2]}`;
  else if ((m = /^(?:git|ssh|git\+ssh):\/\/(?:[^@/]+@)?(.+)$/i.exec(url))) remote = m[1]!;
  else if ((m = /^https?:\/\/(?:[^@/]+@)?(.+\.git)\/?$/i.exec(url))) remote = m[1]!;
  if (!remote) return undefined;
  const colon = fragment.indexOf(':');
  return { remote, fullUrl: url, ref: colon >= 0 ? fragment.slice(0, colon) : fragment, subdir: colon >= 0 ? fragment.slice(colon + 1) : '' };
}

/** A `context:NAME` frontend attr value. */
export type NamedContextValue =
  | { kind: 'local'; dir: string }
  | { kind: 'image'; ref: string }
  /** `docker-image://scratch`: the empty filesystem, as BuildKit reads it. */
  | { kind: 'scratch' }
  | { kind: 'oci-layout'; ref: string }
  | { kind: 'git'; git: GitUrl }
  | { kind: 'http'; url: string };

/** Reads `local:DIR`, `docker-image://REF`, `oci-layout://REF`, git and http URLs. */
export function parseNamedContext(value: string): NamedContextValue {
  if (value.startsWith('local:')) return { kind: 'local', dir: value.slice('local:'.length) };
  if (value.startsWith('docker-image://')) {
    const ref = value.slice('docker-image://'.length);
    return ref.toLowerCase() === 'scratch' ? { kind: 'scratch' } : { kind: 'image', ref };
  }
  if (value.startsWith('oci-layout://')) return { kind: 'oci-layout', ref: value.slice('oci-layout://'.length) };
  const git = parseGitUrl(value);
  if (git) return { kind: 'git', git };
  if (isHttpUrl(value)) return { kind: 'http', url: value };
  throw new Error(`unsupported build context value "${value}": want a local dir, docker-image://, oci-layout://, a git or an http(s) URL`);
}
