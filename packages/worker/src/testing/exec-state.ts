// The exec builder lives in @kiln/llb; re-exported for the worker suites.
export { execState, outputOf, type ExecInit, type ExecMountInit } from '@kiln/llb';
