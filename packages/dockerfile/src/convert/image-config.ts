/** The OCI image config the Dockerfile frontend produces (JSON field names as in the spec). */
export interface ImageConfig {
  architecture: string;
  os: string;
  variant?: string;
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
    OnBuild?: string[];
    Healthcheck?: { Test: string[]; Interval?: number; Timeout?: number; StartPeriod?: number; StartInterval?: number; Retries?: number };
  };
  rootfs: { type: 'layers'; diff_ids: string[] };
  history: { created_by: string; comment?: string; empty_layer?: boolean }[];
}

export function emptyImageConfig(os: string, architecture: string): ImageConfig {
  return {
    architecture,
    os,
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'] },
    rootfs: { type: 'layers', diff_ids: [] },
    history: [],
  };
}
