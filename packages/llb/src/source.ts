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
}

/** An image from a registry: `docker-image://REF`. */
export function image(ref: string, opts: ImageOptions = {}): State {
  return source(`docker-image://${ref}`, {}, opts, opts.platform);
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
