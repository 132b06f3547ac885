export * from './parser/index.js';
export * from './shell/index.js';
export * from './instructions/index.js';
