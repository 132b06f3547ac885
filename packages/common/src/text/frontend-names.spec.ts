import { DOCKERFILE_FRONTEND, frontendNameOf } from './frontend-names.js';

describe('frontendNameOf', () => {
  it.each(['docker/dockerfile', 'docker/dockerfile:1', 'docker/dockerfile:1.7', 'docker/dockerfile:1.7.1-labs', 'docker/dockerfile:1-labs', 'docker.io/docker/dockerfile:1', 'docker/dockerfile-upstream:master', `docker/dockerfile:1@sha256:${'a'.repeat(64)}`, 'dockerfile.v0', ' docker/dockerfile:1 '])(
    'maps %s to the built-in Dockerfile frontend',
    (syntax) => expect(frontendNameOf(syntax)).toBe(DOCKERFILE_FRONTEND),
  );

  it.each(['kiln-yaml.v0', 'example.com/docker/dockerfile:1', 'docker/dockerfilex:1', 'tonistiigi/dockerfile:1'])('keeps %s as a frontend name', (syntax) => {
    expect(frontendNameOf(syntax)).toBe(syntax);
  });
});
