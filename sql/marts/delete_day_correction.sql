-- Forget a correction record of one day by the same merge at the same second (recorded again next).
DELETE FROM {analytics}.day_corrections
WHERE activity_date = :activity_date AND merged_date = :merged_date AND corrected_at = :corrected_at
