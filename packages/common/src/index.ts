export * from './errors/errors.js';
export * from './errors/wire.js';
export * from './log/logger.js';
export * from './digest.js';
export * from './abort.js';
export * from './errors/connect.js';
export * from './rpc/address.js';
export * from './rpc/transport.js';
