export type { Frontend, FrontendInputs, FrontendRequest, FrontendResult } from './frontend.js';
export { dockerfileFrontend } from './dockerfile/dockerfile-frontend.js';
export { createFrontendServiceImpl, type FrontendServiceOptions } from './rpc/frontend-service.js';
