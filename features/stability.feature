Feature: A case is only taken once its folder is complete
  Copying a case into the inbox takes a while. caseflow takes a folder only
  after nothing inside it has changed for the quiet period, so that it never
  sends half a case. Whatever in the inbox is not a case folder is left alone.

  Background:
    Given the quiet period is 1.5 seconds

  Scenario: A folder that is still being copied waits until the copy has been quiet
    Given caseflow is running
    When a copy into the inbox folder "kidney_0001" adds a file every 0.2 seconds for 3 seconds
    Then the case "kidney_0001" stays detected as long as the copy goes on
    And the case "kidney_0001" ends in success
    And the case "kidney_0001" became stable no sooner than 1.5 seconds after the last write of the copy

  Scenario: A file still growing deep inside the folder also holds the case back
    Given caseflow is running
    When the case folder "kidney_0002" is dropped into the inbox while its file "series/2/raw/slice.raw" still grows every 0.2 seconds for 3 seconds
    Then the case "kidney_0002" stays detected as long as the copy goes on
    And the case "kidney_0002" ends in success
    And the case "kidney_0002" became stable no sooner than 1.5 seconds after the last write of the copy

  Scenario: A folder already in the inbox when caseflow starts is taken
    Given the case folder "kidney_0003" is already in the inbox
    When caseflow starts
    Then the case "kidney_0003" ends in success

  Scenario: Loose files and hidden folders in the inbox are never cases
    Given the file "README.txt" and the hidden folder ".kidney_0004.partial" are in the inbox
    And caseflow is running
    When the file "notes.txt" and the hidden folder ".kidney_0005.partial" appear in the inbox
    And the case folder "kidney_0006" is dropped into the inbox
    Then the case "kidney_0006" ends in success
    And caseflow lists only the case "kidney_0006"

  Scenario: A folder deleted before it was stable ends in failure
    Given caseflow is running
    And a copy into the inbox folder "kidney_0007" adds a file every 0.2 seconds for 20 seconds
    And the case "kidney_0007" is detected
    When the copy is given up and the folder "kidney_0007" is deleted
    Then the case "kidney_0007" ends in failure
    And the reason given for "kidney_0007" is "folder removed before it was stable"
