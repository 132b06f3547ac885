export {};
export { freePort } from './ports.js';
export { findNatsServer, startNatsServer, type NatsServer, type StartNatsServerOptions } from './nats.js';
