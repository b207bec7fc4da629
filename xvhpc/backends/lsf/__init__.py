"""LSF: the CSM (Summit) and classic/OpenLava dialects, the jsrun launcher and its job environment."""
