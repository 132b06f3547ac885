import { InvalidArgumentError } from '@kiln/common';

/** A parsed image reference: `[domain/]path[:tag][@digest]`, normalized like Docker's. */
export interface Reference {
  /** Registry host[:port], e.g. "docker.io", "127.0.0.1:5000". */
  domain: string;
  /** Repository path, e.g. "library/busybox". */
  path: string;
  tag?: string;
  digest?: string;
}

const DEFAULT_DOMAIN = 'docker.io';
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;

/**
 * Parses and normalizes an image reference ("busybox" ->
 * docker.io/library/busybox:latest). Throws InvalidArgumentError naming the
 * reference for anything Docker would reject.
 */
export function parseReference(ref: string, field = 'reference'): Reference {
  const bad = (why: string) => new InvalidArgumentError(`invalid reference "${ref}": ${why}`, field);
  if (!ref || ref.length > 255 * 2) throw bad('empty or too long');
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw bad('bad digest');
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad('bad tag');
  }
  const parts = rest.split('/');
  let domain = DEFAULT_DOMAIN;
  if (parts.length > 1 && (parts[0]!.includes('.') || parts[0]!.includes(':') || parts[0] === 'localhost' || /[A-Z]/.test(parts[0]!))) {
    domain = parts.shift()!;
  }
  if (domain === 'index.docker.io') domain = DEFAULT_DOMAIN;
  if (domain === DEFAULT_DOMAIN && parts.length === 1) parts.unshift('library');
  for (const p of parts) if (!PATH_COMPONENT.test(p)) throw bad(`bad path component "${p}" (lower case letters, digits and separators only)`);
  if (!tag && !digest) tag = 'latest';
  return { domain, path: parts.join('/'), tag, digest };
}

/** The canonical string form: domain/path[:tag][@digest]. */
export function formatReference(r: Reference): string {
  return `${r.domain}/${r.path}${r.tag ? `:${r.tag}` : ''}${r.digest ? `@${r.digest}` : ''}`;
}
