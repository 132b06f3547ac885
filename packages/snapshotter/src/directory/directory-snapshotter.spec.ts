import { runSnapshotterContract } from '../testing/contract.js';
import { createDirectorySnapshotter } from './directory-snapshotter.js';

runSnapshotterContract('directory', (root) => createDirectorySnapshotter({ root }));
