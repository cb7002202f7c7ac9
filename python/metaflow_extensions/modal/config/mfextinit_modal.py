"""Configuration of the @modal decorator.

Each value is read from the environment variable METAFLOW_<NAME> first, then
from Metaflow's configuration files, as every Metaflow setting is."""

from metaflow.metaflow_config_funcs import from_conf

# Names of Modal secrets, separated by commas, that every @modal step gets
# before the secrets of its own decorator, such as the secret that contains
# the datastore's AWS credentials.
MODAL_SECRETS = from_conf("MODAL_SECRETS", "")

# When true, the AWS credentials that boto3 finds on this machine (environment
# variables, profiles, SSO) are sent to each @modal sandbox as an ephemeral
# Modal secret, so the task can read and write the S3 datastore.
MODAL_FORWARD_AWS_CREDENTIALS = from_conf("MODAL_FORWARD_AWS_CREDENTIALS", False)
