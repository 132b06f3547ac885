// The tar extractor lives with the snapshots it writes (@kiln/snapshotter).
export { extractTar, type ExtractOptions, type ExtractResult } from '@kiln/snapshotter';
