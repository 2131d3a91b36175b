"""Radiation effects on a flight artifact: fault injection (:mod:`.inject`), torch-free."""

from satcompress.radiation.inject import (
    BIT_CLASSES,
    PROTECTIONS,
    WHERE,
    Campaign,
    CampaignResult,
    FlipResult,
    fault_probabilities,
    protection_overhead,
    run_campaign,
)

__all__ = ["BIT_CLASSES", "PROTECTIONS", "WHERE", "Campaign", "CampaignResult", "FlipResult",
           "fault_probabilities", "protection_overhead", "run_campaign"]
