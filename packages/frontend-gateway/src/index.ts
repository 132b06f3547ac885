export type { Frontend, FrontendGateway, FrontendInputs, FrontendRequest, FrontendResult, FrontendWarning } from './frontend.js';
export { createDockerfileFrontend, dockerfileFrontend, type DockerfileFrontendOptions } from './dockerfile/dockerfile-frontend.js';
export { createRegistryImageResolver, type RegistryImageResolver, type RegistryImageResolverOptions } from './dockerfile/registry-image-resolver.js';
export { createFrontendServiceImpl, type FrontendServiceOptions } from './rpc/frontend-service.js';
