export type { FileInfo, FrontendContext, FrontendOutput, ImageConfig, KilnFrontend, SolvedResult } from './contract.js';
export { serveFrontend, type RunningFrontend, type ServeFrontendOptions } from './serve.js';
export { compileFrontendArgs, runFrontendMain, FRONTEND_USAGE } from './main.js';
export { answerSolve, toResponse, type SolverClients } from './respond.js';
// The LLB builder a frontend writes its result with.
export * from '@kiln/llb';
