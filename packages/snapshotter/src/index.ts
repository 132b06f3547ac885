export type { ActiveSnapshot, PrepareOptions, UnmountedTree, SnapshotChanges, SnapshotInfo, Snapshotter, SnapshotUsage, SnapshotView } from './snapshotter.js';
export { createDirectorySnapshotter, type DirectorySnapshotterOptions } from './directory/directory-snapshotter.js';
export {
  createOverlaySnapshotter,
  DEFAULT_MAX_MOUNT_OPTION_BYTES,
  type OverlaySnapshotterOptions,
} from './overlay/overlay-snapshotter.js';
export { cleanRootPath, MAX_SYMLINKS, resolveInRoot, type ResolveInRootOptions } from './safe-path.js';
export { atFd, mkdirAllInRoot, readFileInRoot, removeEmptyInRoot, walkInRoot, type DirAttrs, type RootWalk, type WalkOptions } from './in-root.js';
export { applyAttrs, applyAttrsToFd, errnoError, lstatOrUndefined, type EntryAttrs } from './apply/fs-helpers.js';
export { applyLayer, type ApplyLayerOptions, type ApplyLayerResult } from './apply/apply-layer.js';
export { decompressStream, sniffCompression, type LayerCompression } from './apply/decompress.js';
export { extractTar, type ExtractOptions, type ExtractResult } from './apply/extract-tar.js';
export { comparedPaths, diffTrees, layerTarChunks, planTreeDiff, WHITEOUT_PREFIX, type LayerPart, type LayerPlan, type TreeDiffOptions } from './diff/tree-diff.js';
export { readPathsXattrs, readTreeXattrs, type TreeXattrs } from './diff/xattrs.js';
