"""Infrastructure as code: CloudFormation template, EMR bootstrap and launcher."""
