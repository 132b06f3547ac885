import { realpathSync, statSync, readFileSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { KilnError, NotFoundError } from '@kiln/common';
import { findLayoutManifest, LAYOUT_DOC_MAX, layoutBlobPath, parseLayoutIndex, verifyLayoutBlob } from '@kiln/registry';
import type { NamedContext } from './build-options.js';

type LayoutContext = Extract<NamedContext, { kind: 'oci-layout' }>;

/**
 * Checks each `oci-layout://` context on this machine before the build and
 * pins the digest its tag names, as buildx does (so the daemon reads exactly
 * this image): the directory and index.json exist, the tag (default
 * "latest", see findLayoutManifest) or digest is there, and the manifest or
 * index it names matches its digest and stays inside the layout. Errors are
 * KilnErrors (exit 1) naming the context and its path.
 */
export function resolveLayoutContexts(contexts: readonly NamedContext[]): NamedContext[] {
  return contexts.map((c) => (c.kind === 'oci-layout' ? { ...c, digest: pinLayout(c) } : c));
}

function pinLayout(c: LayoutContext): string {
  const what = `build context "${c.name}" (oci-layout://${c.path})`;
  let root: string;
  try {
    if (!statSync(c.path).isDirectory()) throw new KilnError('failed_precondition', `${what}: not a directory`);
    root = realpathSync(c.path);
  } catch (err) {
    if (err instanceof KilnError) throw err;
    throw new NotFoundError(`${what}: directory not found`, { path: c.path }, { cause: err });
  }
  const index = parseLayoutIndex(readInside(root, 'index.json', what), what);
  const desc = findLayoutManifest(index, c, what);
  const bytes = readInside(root, layoutBlobPath(desc.digest), what);
  if (bytes === undefined) throw new NotFoundError(`${what}: blob ${desc.digest} not found under ${layoutBlobPath(desc.digest)}`, { digest: desc.digest });
  verifyLayoutBlob(bytes, desc, what);
  return desc.digest;
}

/** A small file of the layout; undefined when absent; refused when it resolves outside the layout or is too big to be a manifest. */
function readInside(root: string, rel: string, what: string): Uint8Array | undefined {
  let real: string;
  try {
    real = realpathSync(join(root, rel));
  } catch {
    return undefined;
  }
  const inside = relative(root, real);
  if (inside === '' || inside === '..' || inside.startsWith(`..${sep}`)) {
    throw new KilnError('permission_denied', `${what}: ${rel} resolves outside the layout directory`, { path: rel });
  }
  const st = statSync(real);
  if (!st.isFile()) return undefined;
  if (st.size > LAYOUT_DOC_MAX) throw new KilnError('failed_precondition', `${what}: ${rel} is bigger than ${LAYOUT_DOC_MAX} bytes`, { path: rel });
  return readFileSync(real);
}

/**
 * The daemon knows a layout only by its session store name: errors it sends
 * back say `oci-layout://STORE...`. Shows the client path there instead.
 */
export function withLayoutPaths(message: string, contexts: readonly NamedContext[]): string {
  let out = message;
  for (const c of contexts) if (c.kind === 'oci-layout') out = out.split(`oci-layout://${c.store}`).join(`oci-layout://${c.path}`);
  return out;
}
