import { lstatSync, readlinkSync, type Stats } from 'node:fs';
import path from 'node:path';
import { runLight } from '@kiln/common';
import { errnoError, MAX_SYMLINKS, readFileInRoot } from '@kiln/snapshotter';

/** An entry found in a layered tree: the layer dir holding it and its path there (no symlink on the way). */
export interface LayerEntry {
  layer: string;
  rel: string;
  stats: Stats;
}

/** Where a path leads inside the tree (symlinks resolved inside the root) and what is there. */
export interface LayeredLookup {
  /** The resolved path inside the root, absolute ("/" for the root), no symlink in it. */
  path: string;
  entry: LayerEntry | undefined;
}

/** Whether directory `rel` of layer dir `layer` carries `trusted.overlay.opaque=y`. */
export type OpaqueCheck = (layer: string, rel: string) => Promise<boolean>;

interface Part {
  layer: string;
  rel: string;
}

/**
 * Reads an overlay tree from its layer dirs (top first: an active's upper,
 * then its parents'), as the overlay mount of them shows it, without
 * mounting it: an entry comes from the topmost layer that has it; a
 * character device 0/0 is a whiteout (the name is gone); a directory merges
 * with the same directory of the layers below until one of them is not a
 * directory or is opaque (`isOpaque`). The layers' roots always merge, as
 * overlayfs' root does. Symlinks are followed inside the root as
 * `resolveInRoot` does (an absolute target restarts at the root, `..` stops
 * there), never by the kernel on the host: each layer is read by lstat
 * below directories lstat'ed on the way, and a file by fd walk in the one
 * layer that holds it. Kiln's overlays are mounted with
 * `redirect_dir=off,metacopy=off`, so no layer holds redirects or
 * metacopy-only files.
 */
export class LayeredTree {
  constructor(
    private readonly layers: readonly string[],
    private readonly isOpaque: OpaqueCheck,
  ) {}

  /** Resolves `p`; `followFinal` follows a symlink in its last component too. */
  async lookup(p: string, followFinal = true): Promise<LayeredLookup> {
    // The merged directories from the root down: the layer dirs each is made of.
    const stack: { names: string[]; parts: Part[] }[] = [{ names: [], parts: this.layers.map((layer) => ({ layer, rel: '' })) }];
    const pending = p.split('/').reverse();
    let links = 0;
    while (pending.length > 0) {
      const c = pending.pop()!;
      if (c === '' || c === '.') continue;
      if (c === '..') {
        if (stack.length > 1) stack.pop();
        continue;
      }
      const dir = stack[stack.length - 1]!;
      const isLast = pending.every((x) => x === '' || x === '.');
      const found = await this.child(dir.parts, c);
      if (!found) {
        if (isLast) return { path: `/${[...dir.names, c].join('/')}`, entry: undefined };
        throw errnoError('ENOENT', `${p}: no such file or directory`);
      }
      const top = found[0]!;
      if (top.stats.isSymbolicLink() && (!isLast || followFinal)) {
        if (++links > MAX_SYMLINKS) throw errnoError('ELOOP', `too many levels of symbolic links resolving ${p}`);
        const target = readlinkSync(hostPath(top));
        if (target.startsWith('/')) stack.splice(1);
        pending.push(...target.split('/').reverse());
        continue;
      }
      if (isLast) return { path: `/${[...dir.names, c].join('/')}`, entry: top };
      if (!top.stats.isDirectory()) throw errnoError('ENOTDIR', `${p}: not a directory`);
      stack.push({ names: [...dir.names, c], parts: found });
    }
    const dir = stack[stack.length - 1]!;
    const first = dir.parts[0]!;
    return { path: `/${dir.names.join('/')}`, entry: { ...first, stats: lstatSync(hostPath(first)) } };
  }

  /** The bytes of regular file `p` (symlinks followed inside the root); ENOENT, ENOTDIR, EISDIR, EINVAL as `readFileInRoot`. */
  async readFile(p: string): Promise<Buffer> {
    const { entry } = await this.lookup(p);
    if (!entry) throw errnoError('ENOENT', `${p}: no such file or directory`);
    if (entry.stats.isDirectory()) throw errnoError('EISDIR', `${p}: is a directory`);
    if (!entry.stats.isFile()) throw errnoError('EINVAL', `${p}: not a regular file`);
    return readFileInRoot(entry.layer, entry.rel);
  }

  /**
   * Entry `name` of the merged directory made of `parts` (top first): the
   * topmost layer's entry and, when that is a directory, the same directory
   * in the layers below that merge with it. Undefined when no layer has it
   * or the topmost is a whiteout.
   */
  private async child(parts: readonly Part[], name: string): Promise<LayerEntry[] | undefined> {
    const out: LayerEntry[] = [];
    for (const part of parts) {
      const rel = part.rel === '' ? name : `${part.rel}/${name}`;
      const stats = lstatOrUndefined(path.join(part.layer, rel));
      if (!stats) continue;
      if (out.length === 0) {
        if (isWhiteout(stats)) return undefined;
        out.push({ layer: part.layer, rel, stats });
        if (!stats.isDirectory()) return out;
      } else {
        // Below a directory only a directory merges; anything else (a whiteout too) is hidden, and so is what lies below it.
        if (!stats.isDirectory()) return out;
        out.push({ layer: part.layer, rel, stats });
      }
      if (part !== parts[parts.length - 1] && (await this.isOpaque(part.layer, rel))) return out;
    }
    return out.length > 0 ? out : undefined;
  }
}

function hostPath(e: Part): string {
  return e.rel === '' ? e.layer : path.join(e.layer, e.rel);
}

function lstatOrUndefined(p: string): Stats | undefined {
  try {
    return lstatSync(p);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
}

/** overlayfs' whiteout: a character device 0/0. */
function isWhiteout(st: Stats): boolean {
  return st.isCharacterDevice() && st.rdev === 0;
}

/** Raised when opaque directories cannot be read (no `getfattr`): the caller mounts the tree instead. */
export class OpaqueDirsUnknown extends Error {}

/**
 * The opaque directories of layer dirs, read once per layer with one
 * recursive `getfattr` run (Node has no xattr API) and kept: a committed
 * layer never changes (containerd never reuses a snapshot's dir). Only
 * layers a lookup must look below are read.
 */
export class OpaqueDirCache {
  private readonly layers = new Map<string, Promise<ReadonlySet<string>>>();

  constructor(private readonly maxLayers = 4096) {}

  readonly isOpaque: OpaqueCheck = async (layer, rel) => (await this.of(layer)).has(rel);

  private of(layer: string): Promise<ReadonlySet<string>> {
    let set = this.layers.get(layer);
    if (!set) {
      set = readOpaqueDirs(layer);
      set.catch(() => this.layers.delete(layer));
      this.layers.set(layer, set);
      // Oldest first out: a long-running worker sees many layers.
      for (const k of this.layers.keys()) {
        if (this.layers.size <= this.maxLayers) break;
        this.layers.delete(k);
      }
    }
    return set;
  }
}

async function readOpaqueDirs(layer: string): Promise<ReadonlySet<string>> {
  const root = layer.replace(/\/+$/, '');
  const out: Uint8Array[] = [];
  let stderr = '';
  let exit;
  try {
    exit = await runLight('getfattr', ['-R', '-P', '-h', '-d', '-m', '^trusted\\.overlay\\.opaque$', '-e', 'text', '--absolute-names', '--', root], {
      stdout: (d) => out.push(d),
      stderr: (d) => {
        if (stderr.length < 4096) stderr += Buffer.from(d).toString();
      },
    });
  } catch (err) {
    throw new OpaqueDirsUnknown(`cannot read the opaque directories of ${layer}: ${(err as Error).message}`);
  }
  if (exit.code !== 0) throw new OpaqueDirsUnknown(`getfattr on ${layer} exited with ${exit.signal ?? exit.code}: ${stderr.trim()}`);
  const set = new Set<string>();
  let current: string | undefined;
  for (const line of Buffer.concat(out).toString('latin1').split('\n')) {
    if (line.startsWith('# file: ')) {
      const abs = unescapeName(line.slice('# file: '.length));
      current = abs === root ? '' : abs.startsWith(`${root}/`) ? abs.slice(root.length + 1) : undefined;
    } else if (current !== undefined && line === 'trusted.overlay.opaque="y"') set.add(current);
  }
  return set;
}

/** getfattr writes bytes outside printable ASCII (and backslash) in names as \ooo. */
function unescapeName(s: string): string {
  return Buffer.from(s.replace(/\\(\\|[0-7]{3})/g, (_, e: string) => (e === '\\' ? '\\' : String.fromCharCode(parseInt(e, 8)))), 'latin1').toString('utf8');
}
