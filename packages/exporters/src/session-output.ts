import { InvalidArgumentError } from '@kiln/common';
import type { Exporter } from './exporter.js';

/** The client output id an exporter writes to (set by the CLI as `session.output`). */
export function sessionOutput(type: string, attrs: Record<string, string>): string {
  const id = attrs['session.output'];
  if (!id) throw new InvalidArgumentError(`the ${type} exporter needs a client output (attr session.output); is dest set?`, `type=${type}`);
  return id;
}

/**
 * An exporter that streams the result's tar to a client output through the
 * session. The client owns dest: for `local` it unpacks the tar into a
 * directory, for `tar` it writes the bytes to a file or stdout.
 */
function tarToClient(type: 'local' | 'tar'): Exporter {
  return {
    type,
    resolve(attrs) {
      const outputId = sessionOutput(type, attrs);
      return {
        async export(src, ctx) {
          await ctx.outputs.write(src.sessionId, outputId, src.openTar(ctx.signal), ctx.signal);
          return {};
        },
      };
    },
  };
}

/** type=local,dest=DIR: the result's files in a client directory. */
export const localExporter = tarToClient('local');
/** type=tar,dest=FILE|-: the result's files as one tar. */
export const tarExporter = tarToClient('tar');
