/** The name the built-in Dockerfile frontend serves. */
export const DOCKERFILE_FRONTEND = 'dockerfile.v0';

/**
 * `# syntax=` values that mean the built-in Dockerfile frontend: BuildKit's
 * own frontend images (`docker/dockerfile`, `docker/dockerfile:1`,
 * `:1.x`, `:1.x.y`, their `-labs` variants and `docker/dockerfile-upstream`
 * with any tag or digest, with or without `docker.io/`), and `dockerfile.v0`
 * itself. Kiln's Dockerfile frontend implements those syntaxes (with the
 * `-labs` features it supports), so no image is pulled for them.
 */
const BUILTIN_DOCKERFILE = /^(?:(?:docker\.io\/)?docker\/dockerfile(?:-upstream)?(?::[A-Za-z0-9_.-]+)?(?:@sha256:[a-f0-9]{64})?|dockerfile\.v0)$/;

/**
 * The frontend name a `# syntax=` line, `--frontend` or the
 * `BUILDKIT_SYNTAX` build arg selects: DOCKERFILE_FRONTEND for the built-in
 * aliases above, else the value itself (trimmed; frontends announce the
 * names they serve and are matched exactly).
 */
export function frontendNameOf(syntax: string): string {
  const s = syntax.trim();
  return BUILTIN_DOCKERFILE.test(s) ? DOCKERFILE_FRONTEND : s;
}

/** Directory label listing the frontend names a frontend tier serves (comma separated). */
export const FRONTEND_NAMES_LABEL = 'kiln.frontend.names';
