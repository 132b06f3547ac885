/**
 * containerd's content label recording where a blob was pulled from:
 * `containerd.io/distribution.source.<registry host>` = the repositories
 * of that registry known to hold it, comma-separated. A push to another
 * repository of the same registry mounts the blob from them
 * (`PushBlobOptions.mountFrom`) instead of uploading it.
 */
export const DISTRIBUTION_SOURCE_LABEL_PREFIX = 'containerd.io/distribution.source.';

/** The label key for registry `domain` (as in references: "docker.io", "127.0.0.1:5000"). */
export function distributionSourceLabel(domain: string): string {
  return `${DISTRIBUTION_SOURCE_LABEL_PREFIX}${domain}`;
}

/** The repositories a label value lists (empty entries dropped). */
export function distributionSources(labels: Readonly<Record<string, string>> | undefined, domain: string): string[] {
  const v = labels?.[distributionSourceLabel(domain)];
  return v ? v.split(',').filter(Boolean) : [];
}

/**
 * The label value with `repo` added, or undefined when it is listed
 * already. The newest repository goes first; at most `max` are kept.
 */
export function withDistributionSource(current: string | undefined, repo: string, max = 10): string | undefined {
  const repos = current ? current.split(',').filter(Boolean) : [];
  if (repos.includes(repo)) return undefined;
  return [repo, ...repos].slice(0, max).join(',');
}
