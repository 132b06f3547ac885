import { InvalidArgumentError } from '@kiln/common';
import type { Exporter, ExportSource } from './exporter.js';
import { withStatementFiles } from './attestation-files.js';
import { exportPredicates } from './image/attestations.js';
import { platformFolder, prefixedTars } from './platform-folders.js';

/** The client output id an exporter writes to (set by the CLI as `session.output`). */
export function sessionOutput(type: string, attrs: Record<string, string>): string {
  const id = attrs['session.output'];
  if (!id) throw new InvalidArgumentError(`the ${type} exporter needs a client output (attr session.output); is dest set?`, `type=${type}`);
  return id;
}

/**
 * An exporter that streams the result's tar to a client output through the
 * session. The client owns dest: for `local` it unpacks the tar into a
 * directory, for `tar` it writes the bytes to a file or stdout. A
 * multi-platform result is one tar with a folder per platform
 * (`linux_amd64/`, `linux_arm64/`), as buildx writes it.
 */
function tarToClient(type: 'local' | 'tar'): Exporter {
  return {
    type,
    resolve(attrs) {
      const outputId = sessionOutput(type, attrs);
      return {
        async export(src, ctx) {
          await ctx.outputs.write(src.sessionId, outputId, resultTar(src, ctx.signal), ctx.signal);
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

/** The result's files, plus the attestations asked for (`--sbom`, `--provenance`) as statement files beside them (per platform folder). */
function resultTar(src: ExportSource, signal?: AbortSignal): AsyncIterable<Uint8Array> {
  const predicates = exportPredicates(src);
  if (!src.platforms?.length) return withStatementFiles(src.openTar(signal), predicates.of(0));
  return prefixedTars(src.platforms.map((p, i) => ({ prefix: platformFolder(p.platform), open: () => withStatementFiles(p.openTar(signal), predicates.of(i)) })));
}
