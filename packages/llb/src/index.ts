export * from './marshal.js';
export * from './state.js';
export * from './source.js';
export * from './file.js';
export * from './exec.js';
export * from './merge.js';
export * from './op-kinds.js';
