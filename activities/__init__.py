"""Side effects of a campaign: drafting content from templates, delivering messages."""
