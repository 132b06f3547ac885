export { kilnYamlFrontend, KILN_YAML_FRONTEND } from './kiln-yaml-frontend.js';
export { parseKilnYaml, type KilnYaml, type FileEntry } from './spec.js';
