import type { ExecIO, ExecResult, ExecSpec, Executor } from '../executor.js';

/** What a FakeExecutor does for one run: return an exit code (default 0). */
export type FakeExecHandler = (spec: ExecSpec, io: ExecIO) => Promise<number | void> | number | void;

/**
 * An Executor for unit tests: records every spec and runs `handler`
 * in-process (it may write to `spec.rootfs` and call `io.stdout`).
 */
export class FakeExecutor implements Executor {
  readonly calls: ExecSpec[] = [];

  constructor(private readonly handler: FakeExecHandler = () => 0) {}

  async run(spec: ExecSpec, io: ExecIO = {}): Promise<ExecResult> {
    io.signal?.throwIfAborted();
    this.calls.push(spec);
    const code = await this.handler(spec, io);
    return { exitCode: code ?? 0 };
  }
}
