"""Where data lives: S3 through boto3 and making a data root local before it is read."""
