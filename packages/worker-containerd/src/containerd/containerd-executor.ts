import { UnimplementedError } from '@kiln/common';
import type { ExecResult, ExecSpec, Executor } from '@kiln/worker';

/**
 * The containerd Executor — NOT IMPLEMENTED YET: `run` always rejects with
 * UnimplementedError, so exec ops fail on this worker while source and file
 * ops work. A later issue makes it create a container and task through
 * containerd's gRPC API (@grpc/grpc-js) on the spec's rootfs and mounts.
 */
export class ContainerdExecutor implements Executor {
  async run(spec: ExecSpec): Promise<ExecResult> {
    throw new UnimplementedError('exec ops are not supported yet by the containerd worker', { command: spec.process.args.join(' ') });
  }
}

export function createContainerdExecutor(): ContainerdExecutor {
  return new ContainerdExecutor();
}
