export { mountsBelow, runSnapshotterContract, type SnapshotterFactory } from './contract.js';
