/** The OCI image config the Dockerfile frontend produces (JSON field names as in the spec). */
export interface ImageConfig {
  architecture: string;
  os: string;
  variant?: string;
  author?: string;
  config: {
    User?: string;
    ExposedPorts?: Record<string, object>;
    Env?: string[];
    Entrypoint?: string[] | null;
    Cmd?: string[] | null;
    Volumes?: Record<string, object>;
    WorkingDir?: string;
    Labels?: Record<string, string>;
    StopSignal?: string;
    Shell?: string[];
    OnBuild?: string[] | null;
    Healthcheck?: { Test: string[]; Interval?: number; Timeout?: number; StartPeriod?: number; StartInterval?: number; Retries?: number };
  };
  rootfs: { type: 'layers'; diff_ids: string[] };
  history: HistoryEntry[];
}

export interface HistoryEntry {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
}

/** The comment BuildKit puts on every history entry it adds. */
export const HISTORY_COMMENT = 'buildkit.dockerfile.v0';

export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The config of `FROM scratch`, as BuildKit's emptyImage. */
export function emptyImageConfig(os: string, architecture: string, variant?: string): ImageConfig {
  return {
    architecture,
    os,
    ...(variant ? { variant } : {}),
    config: { Env: [DEFAULT_PATH], WorkingDir: '/' },
    rootfs: { type: 'layers', diff_ids: [] },
    history: [],
  };
}

/**
 * A base image's config as the start of a stage: its runtime config and
 * history are kept (rootfs is the exporter's to fill).
 */
export function imageConfigFromBase(raw: unknown, fallback: { os: string; architecture: string; variant?: string }): ImageConfig {
  const img = (raw && typeof raw === 'object' ? raw : {}) as Partial<ImageConfig> & { config?: ImageConfig['config'] | null };
  const out: ImageConfig = {
    architecture: typeof img.architecture === 'string' && img.architecture ? img.architecture : fallback.architecture,
    os: typeof img.os === 'string' && img.os ? img.os : fallback.os,
    config: structuredClone(img.config ?? {}),
    rootfs: { type: 'layers', diff_ids: [] },
    history: Array.isArray(img.history) ? structuredClone(img.history) : [],
  };
  const variant = typeof img.variant === 'string' ? img.variant : img.architecture ? undefined : fallback.variant;
  if (variant) out.variant = variant;
  if (typeof img.author === 'string' && img.author) out.author = img.author;
  if (!out.config.Env) out.config.Env = [DEFAULT_PATH];
  return out;
}
